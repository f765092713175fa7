"""The vLLM container ocrd would create (pure: no Docker), and the one-line Docker error mapping.

The integration tests (tests/integration/test_docker_runner.py) check the same things from inside a
real container; these cover the variations that are cheap here: devices, mounts, users, hashes,
option errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.errors import APIError

from ocrd.catalog import CatalogEntry
from ocrd.errors import ConfigError
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm import docker_host
from ocrd.runners.vllm.container_spec import ContainerOptions, container_config, container_name

IMAGE_ID = "sha256:" + "ab" * 32


def spec(device: str = "cpu", spec_env: dict[str, str] | None = None, model_id: str = "org/model",
         **options) -> RunnerSpec:
    opts = {"image": "vllm/vllm-openai:v0.11.2", "hub_dir": "/srv/hf/hub", "hf_home": "/srv/hf", **options}
    return RunnerSpec(model=CatalogEntry(id=model_id, engines=("vllm",)), engine="vllm", device=device,
                      options=opts, env=spec_env or {})


def config(s: RunnerSpec, image_id: str = IMAGE_ID):
    return container_config(s, ContainerOptions.from_spec(s), image_id)


def test_command_puts_the_model_first_then_ocrds_flags_then_the_catalogs():
    c = config(spec(gpu_memory_utilization=0.45, revision="abc123", args=["--trust-remote-code",
                                                                         "--max-model-len", "8192"]))
    assert c.command == ["org/model", "--served-model-name", "org/model", "--host", "0.0.0.0", "--port", "8000",
                         "--revision", "abc123", "--gpu-memory-utilization", "0.45",
                         "--trust-remote-code", "--max-model-len", "8192"]


def test_flags_that_ocrd_sets_itself_are_refused_in_args():
    with pytest.raises(ConfigError, match="--gpu-memory-utilization is set by ocrd itself"):
        ContainerOptions.from_spec(spec(args=["--gpu-memory-utilization", "0.9"]))


@pytest.mark.parametrize("bad, message", [
    ({"imgae": "x"}, "unknown keys \\['imgae'\\]"),
    ({"image": ""}, "'image' is required"),
    ({"gpu_memory_utilization": 1.5}, "not in \\(0, 1\\]"),
    ({"env": {"HF_HUB_OFFLINE": "1"}}, "set offline"),
])
def test_bad_options_are_config_errors_naming_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        ContainerOptions.from_spec(spec(**bad))


def test_hf_home_is_mounted_whole_where_root_looks_for_it():
    c = config(spec())
    assert c.volumes == {"/srv/hf": {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    assert c.environment["HF_HOME"] == "/root/.cache/huggingface"
    assert c.environment["HF_HUB_CACHE"] == "/root/.cache/huggingface/hub"


def test_a_hub_dir_elsewhere_in_hf_home_keeps_its_relative_place():
    c = config(spec(hub_dir="/srv/hf/custom/hub"))
    assert c.volumes == {"/srv/hf": {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    assert c.environment["HF_HUB_CACHE"] == "/root/.cache/huggingface/custom/hub"


def test_a_hub_dir_outside_hf_home_is_mounted_alone_as_the_hub():
    c = config(spec(hub_dir="/var/cache/ocrd/hub", hf_home=None))
    assert c.volumes == {"/var/cache/ocrd/hub": {"bind": "/root/.cache/huggingface/hub", "mode": "rw"}}
    assert c.environment["HF_HUB_CACHE"] == "/root/.cache/huggingface/hub"


@pytest.mark.parametrize("user, home", [
    ("vllm", "/home/vllm/.cache/huggingface"),
    ("vllm:vllm", "/home/vllm/.cache/huggingface"),
    ("0", "/root/.cache/huggingface"),
    ("1000:1000", "/cache/huggingface"),
])
def test_the_cache_goes_where_the_containers_user_looks(user, home):
    c = config(spec(user=user))
    assert c.volumes["/srv/hf"]["bind"] == home
    assert c.environment["HF_HOME"] == home
    assert c.create_kwargs("n")["user"] == user


def test_host_cache_paths_never_reach_the_container_and_offline_comes_from_the_spec_env():
    c = config(spec(spec_env={"HF_HUB_CACHE": "/srv/hf/hub", "HF_HOME": "/srv/hf", "HF_HUB_OFFLINE": "1",
                         "HF_TOKEN": "t"}))
    assert c.environment["HF_HUB_CACHE"] == "/root/.cache/huggingface/hub"
    assert c.environment["HF_HUB_OFFLINE"] == "1"
    assert c.environment["HF_TOKEN"] == "t"
    assert "HF_HUB_OFFLINE" not in config(spec()).environment


@pytest.mark.parametrize("device, options, ids", [
    ("cuda", {}, ["0"]),
    ("cuda:1", {}, ["1"]),
    ("cuda:1", {"gpu": "GPU-8a1b2c"}, ["GPU-8a1b2c"]),
])
def test_the_planned_gpu_is_requested(device, options, ids):
    c = config(spec(device=device, **options))
    assert c.create_kwargs("n")["device_requests"] == [{"Driver": "", "DeviceIDs": ids, "Capabilities": [["gpu"]]}]


def test_cpu_requests_no_gpu():
    assert "device_requests" not in config(spec(gpu="GPU-8a1b2c")).create_kwargs("n")


def test_create_arguments_loopback_port_init_ipc_and_labels():
    kwargs = config(spec(instance="host-a", labels={"team": "ocr"})).create_kwargs("ocrd-org-model-abc123")
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", None)}
    assert kwargs["init"] is True and kwargs["ipc_mode"] == "host" and "shm_size" not in kwargs
    assert kwargs["labels"] == {"team": "ocr", "ocrd.managed": "1", "ocrd.model": "org/model",
                                "ocrd.instance": "host-a", "ocrd.config-hash": kwargs["labels"]["ocrd.config-hash"]}
    with_shm = config(spec(shm_size="8g", host_port=8101)).create_kwargs("n")
    assert with_shm["shm_size"] == "8g" and "ipc_mode" not in with_shm
    assert with_shm["ports"] == {"8000/tcp": ("127.0.0.1", 8101)}


def test_the_config_hash_is_stable_and_follows_everything_that_shapes_the_container():
    base = config(spec()).config_hash
    assert config(spec()).config_hash == base
    assert config(spec(labels={"only": "a label"})).config_hash == base
    changed = [
        config(spec(), image_id="sha256:" + "cd" * 32),
        config(spec(gpu_memory_utilization=0.3)),
        config(spec(args=["--max-model-len", "4096"])),
        config(spec(offline=True)),
        config(spec(device="cuda:0")),
        config(spec(instance="other")),
        config(spec(user="vllm")),
        config(spec(model_id="org/other")),
    ]
    assert len({c.config_hash for c in changed} | {base}) == len(changed) + 1


def test_container_names_are_docker_safe_and_unique():
    first, second = container_name("rednote-hilab/dots.ocr"), container_name("rednote-hilab/dots.ocr")
    assert first.startswith("ocrd-rednote-hilab-dots.ocr-") and first != second


# --- Docker's errors, in one line ----------------------------------------------------------------


def test_no_nvidia_runtime_is_mapped_to_the_toolkit_hint():
    error = APIError("500 Server Error", explanation='could not select device driver "" with capabilities: [[gpu]]')
    assert docker_host.start_error_line(error) == docker_host.NVIDIA_RUNTIME_HINT


def test_a_port_in_use_names_the_port():
    error = APIError("500 Server Error", explanation="driver failed programming external connectivity on "
                     "endpoint x: Error starting userland proxy: listen tcp4 127.0.0.1:8101: bind: "
                     "address already in use")
    assert docker_host.start_error_line(error, 8101) == (
        "127.0.0.1:8101 is already in use on this host: free it, or choose another port")


def test_other_docker_errors_keep_dockers_words_on_one_line():
    error = APIError("400 Client Error", explanation="invalid mount config:\n  bind source path does not exist")
    assert docker_host.start_error_line(error) == (
        "Docker could not start the container: invalid mount config: bind source path does not exist")


# --- memory of a container from its cgroup -------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_memory_less_inactive_file(tmp_path: Path):
    _write(tmp_path / "proc/42/cgroup", "5:devices:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    _write(tmp_path / "sys/memory/docker/abc/memory.usage_in_bytes", "1000000\n")
    _write(tmp_path / "sys/memory/docker/abc/memory.stat", "cache 300000\ntotal_inactive_file 200000\n")
    assert docker_host.cgroup_memory_bytes(42, tmp_path / "proc", tmp_path / "sys") == 800000


def test_cgroup_v2_memory_less_inactive_file(tmp_path: Path):
    _write(tmp_path / "proc/42/cgroup", "0::/system.slice/docker-abc.scope\n")
    _write(tmp_path / "sys/system.slice/docker-abc.scope/memory.current", "5000\n")
    _write(tmp_path / "sys/system.slice/docker-abc.scope/memory.stat", "anon 4000\ninactive_file 1000\n")
    assert docker_host.cgroup_memory_bytes(42, tmp_path / "proc", tmp_path / "sys") == 4000


def test_cgroup_memory_of_a_process_this_host_cannot_see_is_zero(tmp_path: Path):
    assert docker_host.cgroup_memory_bytes(42, tmp_path / "proc", tmp_path / "sys") == 0
