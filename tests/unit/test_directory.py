"""ocrd.directory: the catalog narrowed to this host (engines installed, models downloaded),
cached models the catalog does not know, and the runner specs built from all that. Real cache
layouts in tmp_path; the transformers availability probe runs a real interpreter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config import Settings
from ocrd.directory import ModelDirectory
from ocrd.engines import _missing_packages
from ocrd.errors import EngineUnavailable, InvalidRequest, ModelNotFound
from ocrd.planner import Decision

MINERU = "opendatalab/MinerU2.5-2509-1.2B"
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
             "vision_config": {"depth": 2}}
REV = "0123456789abcdef0123456789abcdef01234567"


def cache_model(hub: Path, repo_id: str, config: dict, *, shards: list[str] | None = None,
                present: list[str] | None = None) -> Path:
    """A snapshot as huggingface_hub lays it out (refs/main -> snapshots/<rev>/...)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    (snapshot / "config.json").write_text(json.dumps(config))
    if shards is None:
        (snapshot / "model.safetensors").write_bytes(b"weights")
    else:
        index = {"weight_map": {f"layer{i}": shard for i, shard in enumerate(shards)}}
        (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
        for shard in present or []:
            (snapshot / shard).write_bytes(b"weights")
    return snapshot


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


def directory(hub: Path, **settings) -> ModelDirectory:
    _missing_packages.cache_clear()
    return ModelDirectory(Catalog.load_default(), Settings(cache={"hub_dir": hub}, **settings))


def ids(entries) -> list[str]:
    return [entry.id for entry in entries]


def decided(entry, device: str = "cpu", quantization: str = "none", uuid: str = "") -> Decision:
    """A planner decision for ``entry`` (the planner's own tests are in test_planner.py)."""
    return Decision(model=entry.id, engine="transformers", device=device, quantization=quantization,
                    gpu_memory_utilization=0.0, estimated_bytes=0, reasons=(), fits=True, gpu_uuid=uuid)


def test_an_empty_cache_serves_the_builtin_models_only(hub):
    assert ids(directory(hub).available()) == ["builtin/ppocr", "builtin/tesseract"]


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
    spec = models.runner_spec(entry, decided(entry))

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
    spec = models.runner_spec(entry, decided(entry, quantization="4bit"))
    assert spec.options["quantization"] == "4bit"


def test_a_gpu_runner_sees_exactly_its_planned_gpu_as_cuda_0(hub):
    cache_model(hub, MINERU, QWEN_LIKE)
    models = directory(hub)
    entry = models.resolve(MINERU)
    uuid = "GPU-22222222-aaaa-bbbb-cccc-000000000000"
    spec = models.runner_spec(entry, decided(entry, device="cuda:1", quantization="8bit", uuid=uuid))
    assert spec.device == "cuda:1"  # NVML's index, for ocrd's accounting and `ocrctl ps`
    assert spec.env["CUDA_VISIBLE_DEVICES"] == uuid
    assert spec.options["device"] == "cuda:0" and spec.options["dtype"] == "bfloat16"
    assert spec.options["quantization"] == "8bit"


def test_an_incomplete_snapshot_is_not_loaded_offline(hub):
    cache_model(hub, MINERU, QWEN_LIKE, shards=["a.safetensors", "b.safetensors"],
                present=["a.safetensors"])
    models = directory(hub, transformers={"device": "cpu"})
    entry = models.resolve(MINERU)
    spec = models.runner_spec(entry, decided(entry))
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
        models.runner_spec(entry, decided(entry))


def test_without_torch_for_the_configured_python_the_transformers_models_are_not_served(hub, tmp_path):
    cache_model(hub, MINERU, QWEN_LIKE)
    python = tmp_path / "python-without-torch"
    python.write_text("#!/bin/sh\necho torch transformers\n")  # what the probe prints: missing
    python.chmod(0o755)
    models = directory(hub, transformers={"python": str(python)})

    assert MINERU not in ids(models.available())
    with pytest.raises(EngineUnavailable) as caught:
        models.resolve(MINERU)
    assert "torch, transformers not installed" in caught.value.message


def test_an_engine_the_model_does_not_support_is_a_400(hub):
    models = directory(hub)
    with pytest.raises(InvalidRequest, match="cannot run on the transformers engine"):
        models.engine_for(models.resolve("ppocr"), "transformers")


def test_hub_dir_follows_hf_variables_unless_configured(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", "/srv/hf/hub")
    assert ModelDirectory(Catalog.load_default(), Settings()).hub_dir == Path("/srv/hf/hub")
    assert directory(hub).hub_dir == hub
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", "/srv/hf")
    assert ModelDirectory(Catalog.load_default(), Settings()).hub_dir == Path("/srv/hf/hub")
