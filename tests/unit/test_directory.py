"""ocrd.core.directory: the catalog narrowed to this host (engines installed, models downloaded),
cached models the catalog does not know, and the runner specs built from all that. Real cache
layouts in tmp_path (the probe of another interpreter is in tests/integration/test_engine_probes.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings, vllm_instance
from ocrd.core.directory import ModelDirectory
from ocrd.core.wishes import LoadWish
from ocrd.errors import EngineUnavailable, InvalidRequest, ModelNotFound
from ocrd.planning.availability import _missing_packages
from ocrd.planning.planner import Decision
from ocrd.runners.vllm.container_spec import ContainerOptions, container_config
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.cache_layout import cache_model

MINERU = "opendatalab/MinerU2.5-2509-1.2B"
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
             "vision_config": {"depth": 2}}


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


def directory(hub: Path, *, docker: DockerStatus | None = None, **settings) -> ModelDirectory:
    """The directory of ``hub``; Docker's status is ``docker`` when given, else asked of Docker."""
    _missing_packages.cache_clear()
    return ModelDirectory(Catalog.load_default(), Settings(cache={"hub_dir": hub}, **settings),
                          docker_status=(lambda: docker) if docker is not None else None)


def ids(entries) -> list[str]:
    return [entry.id for entry in entries]


def decided(entry, device: str = "cpu", quantization: str = "none", uuid: str = "") -> Decision:
    """A planner decision for ``entry`` (the planner's own tests are in test_planner.py)."""
    return Decision(model=entry.id, engine="transformers", device=device, quantization=quantization,
                    gpu_memory_utilization=0.0, estimated_bytes=0, reasons=(), fits=True, gpu_uuid=uuid)


def test_an_empty_cache_serves_the_builtin_models_only(hub):
    assert ids(directory(hub).available()) == ["builtin/ppocr", "builtin/tesseract"]


def test_a_builtin_model_whose_program_is_missing_is_not_listed(hub):
    # Listed only where it can be served: GET /v1/models, and what a node registers with a
    # cluster's router (ocrd.cluster), must not offer what resolve() then refuses.
    models = ModelDirectory(Catalog.load_default({"tesseract": "/nonexistent/tesseract"}),
                            Settings(cache={"hub_dir": hub}))
    assert ids(models.available()) == ["builtin/ppocr"]
    with pytest.raises(ModelNotFound, match="needs the 'tesseract' program"):
        models.resolve("tesseract")


def test_a_downloaded_catalog_model_is_listed_and_resolves_by_alias(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub)
    assert MINERU in ids(models.available())
    entry = models.catalog.resolve(MINERU)
    assert models.resolve(entry.aliases[0]).id == MINERU


def test_a_catalog_model_not_downloaded_says_how_to_fetch_it(hub):
    with pytest.raises(ModelNotFound) as caught:
        directory(hub).resolve(MINERU)
    assert caught.value.code == "model_not_downloaded"
    assert f"ocrctl pull {MINERU}" in caught.value.message


def test_runner_spec_loads_offline_from_the_shared_cache_on_cpu(hub):
    snapshot = cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, transformers={"device": "cpu"})
    entry = models.resolve(MINERU)
    spec = models.runner_spec(models.wishes(entry), decided(entry))

    assert spec.engine == "transformers" and spec.device == "cpu"
    # A CPU runner sees no GPU at all: exactly the planned device.
    assert spec.env == {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert spec.options["revision"] == snapshot.name and spec.options["offline"] is True
    assert spec.options["quantization"] == "none" and spec.options["dtype"] == "float32"
    assert spec.python == sys.executable


def test_the_runner_gets_the_planned_quantization(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, transformers={"device": "cpu"})
    entry = models.resolve(MINERU)
    spec = models.runner_spec(models.wishes(entry), decided(entry, quantization="4bit"))
    assert spec.options["quantization"] == "4bit"


def test_a_gpu_runner_sees_exactly_its_planned_gpu_as_cuda_0(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub)
    entry = models.resolve(MINERU)
    uuid = "GPU-22222222-aaaa-bbbb-cccc-000000000000"
    spec = models.runner_spec(models.wishes(entry), decided(entry, device="cuda:1", quantization="8bit", uuid=uuid))
    assert spec.device == "cuda:1"  # NVML's index, for ocrd's accounting and `ocrctl ps`
    assert spec.env["CUDA_VISIBLE_DEVICES"] == uuid
    assert spec.options["device"] == "cuda:0" and spec.options["dtype"] == "bfloat16"
    assert spec.options["quantization"] == "8bit"


def test_an_incomplete_snapshot_is_not_loaded_offline(hub):
    cache_model(hub, MINERU, QWEN_LIKE, shards=["a.safetensors", "b.safetensors"],
                present=["a.safetensors"])
    models = directory(hub, transformers={"device": "cpu"})
    entry = models.resolve(MINERU)
    spec = models.runner_spec(models.wishes(entry), decided(entry))
    assert spec.options["offline"] is False and "HF_HUB_OFFLINE" not in spec.env


def test_a_cached_vlm_the_catalog_does_not_know_is_served_with_inferred_facts(hub):
    cache_model(hub, "someone/tiny-vlm", QWEN_LIKE)
    cache_model(hub, "someone/text-only", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    models = directory(hub)
    listed = ids(models.available())
    assert "someone/tiny-vlm" in listed and "someone/text-only" not in listed
    entry = models.resolve("someone/tiny-vlm")
    assert entry.engines == ("transformers",) and entry.inferred


def test_models_needing_remote_code_are_refused_when_remote_code_is_off(hub):
    cache_model(hub, "rednote-hilab/dots.ocr", {"model_type": "dots_ocr", "vision_config": {}})
    models = directory(hub, transformers={"allow_remote_code": False, "device": "cpu"})
    entry = models.catalog.resolve("dots.ocr")
    with pytest.raises(EngineUnavailable, match="allow_remote_code"):
        models.runner_spec(models.wishes(entry), decided(entry))


def test_an_engine_the_model_does_not_support_is_a_400(hub):
    models = directory(hub)
    with pytest.raises(InvalidRequest, match="cannot run on the transformers engine"):
        models.engine_for(models.wishes(models.resolve("ppocr"), LoadWish(engine="transformers")))


def test_hub_dir_follows_hf_variables_unless_configured(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", "/srv/hf/hub")
    assert ModelDirectory(Catalog.load_default(), Settings()).hub_dir == Path("/srv/hf/hub")
    assert directory(hub).hub_dir == hub
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", "/srv/hf")
    assert ModelDirectory(Catalog.load_default(), Settings()).hub_dir == Path("/srv/hf/hub")


# --- vLLM specs ------------------------------------------------------------------------------------

PLAIN_DOCKER = DockerStatus(True, version="20.10.24", runtimes=("runc",))  # this host's engine


def vllm_decided(entry, device: str = "cpu", share: float = 0.0, uuid: str = "") -> Decision:
    return Decision(model=entry.id, engine="vllm", device=device, quantization="none",
                    gpu_memory_utilization=share, estimated_bytes=0, reasons=(), fits=True, gpu_uuid=uuid)


def test_a_vllm_spec_on_the_cpu_requests_no_gpu_and_records_its_placement(hub, tmp_path):
    snapshot = cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, vllm={"device": "cpu", "image": "local/vllm-cpu:1", "instance": "blue"},
                       runtime_dir=tmp_path / "run")
    entry = models.catalog.resolve(MINERU)
    spec = models.runner_spec(models.wishes(entry), vllm_decided(entry))
    options = ContainerOptions.from_spec(spec)  # the container runner accepts it as it is
    assert (spec.engine, spec.device, spec.env["CUDA_VISIBLE_DEVICES"]) == ("vllm", "cpu", "")
    assert (options.image, options.launcher, options.instance) == ("local/vllm-cpu:1", "docker", "blue")
    assert (options.revision, options.offline, options.hub_dir) == (snapshot.name, True, str(hub))
    assert options.args == tuple(entry.vllm.args) and options.gpu_memory_utilization is None
    assert dict(options.labels) == {"ocrd.device": "cpu"}
    config = container_config(spec, options, "sha256:image")
    assert config.device_requests == [] and "--gpu-memory-utilization" not in config.command
    assert config.environment["HF_HUB_OFFLINE"] == "1"


def test_a_vllm_spec_on_a_gpu_gets_the_planners_share_of_that_gpu(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, vllm={"launcher": "process", "python": "/opt/vllm/bin/python"})
    entry = models.catalog.resolve(MINERU)
    uuid = "GPU-22222222-aaaa-bbbb-cccc-000000000000"
    spec = models.runner_spec(models.wishes(entry), vllm_decided(entry, "cuda:1", 0.45, uuid))
    options = ContainerOptions.from_spec(spec)
    assert (spec.device, spec.python, options.launcher) == ("cuda:1", "/opt/vllm/bin/python", "process")
    assert (options.gpu, options.gpu_memory_utilization) == (uuid, 0.45)
    assert "CUDA_VISIBLE_DEVICES" not in spec.env  # the container's device request gives it its GPU
    assert dict(options.labels) == {"ocrd.device": "cuda:1", "ocrd.gpu": uuid,
                                    "ocrd.gpu-memory-utilization": "0.45"}
    config = container_config(spec, options, "sha256:image")
    assert config.device_requests[0]["DeviceIDs"] == [uuid]
    assert config.command[config.command.index("--gpu-memory-utilization") + 1] == "0.45"


def test_an_adopted_container_is_rebuilt_at_the_placement_its_labels_record(hub):
    # The share a fresh plan would give now differs (the container itself takes GPU memory), so
    # the spec comes from the labels, and the config hash compares the rest.
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, docker=PLAIN_DOCKER, vllm={"device": "cpu"})
    entry = models.catalog.resolve(MINERU)
    started = models.runner_spec(models.wishes(entry), vllm_decided(entry))
    options = ContainerOptions.from_spec(started)
    labels = container_config(started, options, "sha256:image").labels
    again = models.adopted_vllm_spec(MINERU, labels)
    assert again is not None
    assert (container_config(again, ContainerOptions.from_spec(again), "sha256:image").config_hash
            == labels["ocrd.config-hash"])


def test_an_adopted_gpu_container_keeps_its_share_and_a_cpu_build_no_longer_matches_it(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    nvidia = DockerStatus(True, version="20.10.24", runtimes=("nvidia", "runc"))
    uuid = "GPU-22222222-aaaa-bbbb-cccc-000000000000"
    gpu_labels = {"ocrd.device": "cuda:0", "ocrd.gpu": uuid, "ocrd.gpu-memory-utilization": "0.3"}
    on_gpu = directory(hub, docker=nvidia)
    kept = on_gpu.adopted_vllm_spec(MINERU, gpu_labels)
    assert kept is not None and kept.device == "cuda:0"
    assert (kept.options["gpu"], kept.options["gpu_memory_utilization"]) == (uuid, 0.3)
    assert kept.options["labels"] == gpu_labels
    # A container that ran on the CPU is not one to keep once vLLM should use a GPU.
    with pytest.raises(ValueError, match="it runs on the CPU but vllm.device is now cuda"):
        on_gpu.adopted_vllm_spec(MINERU, {"ocrd.device": "cpu"})
    # vllm.device is cpu now: ocrd would start it without a GPU, a different container.
    rebuilt = directory(hub, docker=nvidia, vllm={"device": "cpu"}).adopted_vllm_spec(MINERU, gpu_labels)
    assert rebuilt is not None and rebuilt.device == "cpu" and "gpu" not in rebuilt.options


def test_no_adopted_spec_for_a_model_that_is_gone_or_cannot_run_on_vllm(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, docker=PLAIN_DOCKER, vllm={"device": "cpu"})
    assert models.adopted_vllm_spec("org/deleted-since", {"ocrd.device": "cpu"}) is None
    assert models.adopted_vllm_spec("stepfun-ai/GOT-OCR-2.0-hf", {"ocrd.device": "cpu"}) is None
    with pytest.raises(ValueError, match="its labels do not say where it runs"):
        models.adopted_vllm_spec(MINERU, {})


def test_the_docker_instance_is_derived_from_the_runtime_directory_unless_configured(tmp_path):
    one = Settings(runtime_dir=tmp_path / "one")
    assert vllm_instance(one) == vllm_instance(Settings(runtime_dir=tmp_path / "one"))  # a restart
    assert vllm_instance(one) != vllm_instance(Settings(runtime_dir=tmp_path / "two"))
    assert vllm_instance(one).startswith("ocrd-")
    assert vllm_instance(Settings(runtime_dir=tmp_path / "one", vllm={"instance": "blue"})) == "blue"


def test_per_model_vllm_args_come_after_the_catalogs_and_the_global_ones(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, vllm={"device": "cpu", "args": ["--max-num-seqs", "8"]},
                       models={MINERU: {"vllm_args": ["--max-model-len", "16384", "--disable-custom-all-reduce"]}})
    entry = models.catalog.resolve(MINERU)
    options = ContainerOptions.from_spec(models.runner_spec(models.wishes(entry), vllm_decided(entry)))
    assert options.args == (*entry.vllm.args, "--max-num-seqs", "8", "--max-model-len", "16384",
                            "--disable-custom-all-reduce")
    # The planner sees the same arguments: its KV-cache estimate follows their --max-model-len.
    preference = models.wishes(entry).preference()
    assert preference.vllm_args == ("--max-num-seqs", "8", "--max-model-len", "16384", "--disable-custom-all-reduce")
    assert preference.gpu_memory_utilization is None


def test_a_per_model_gpu_share_reaches_the_planner_with_its_source(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub, models={MINERU: {"gpu_memory_utilization": 0.3}})
    preference = models.wishes(models.catalog.resolve(MINERU)).preference()
    assert preference.gpu_memory_utilization == 0.3
    assert preference.gpu_memory_utilization_from == f'[models."{MINERU}"] gpu_memory_utilization'
