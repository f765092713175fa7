"""The vLLM engine through a real ``ocrd serve``: containers on a real Docker engine, driven over
gRPC (ocrctl) and HTTP (the official openai client), with FakeVllm (tests/support/fake_vllm) in
place of vLLM's engine.

The daemon runs ``Qwen/Qwen2-VL-2B-Instruct`` forced onto the vllm engine with ``vllm.device =
"cpu"`` (this host has no GPU and no NVIDIA runtime), its image the locally built fake one, and
the model a small snapshot in a test Hugging Face cache (sparse safetensors: nothing is ever
downloaded). Every daemon of the module shares one ``vllm.instance``; whatever is left carrying
it is removed at the end, and the tests that promise "nothing left" check it themselves first.
Each container start costs a second or two, so each test starts as few as it can. Timeouts are
hang guards; nothing asserts on speed.
"""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ocrd.runners.vllm import docker_host
from tests.support.daemon import RunningDaemon, running_daemon, wait_until
from tests.support.docker_engine import instance_containers, remove_instance
from tests.support.fake_vllm.server import CRASH_WORD
from tests.support.sized_models import QWEN_LIKE_CONFIG, cache_model, vlm_tensors

pytestmark = pytest.mark.docker

MODEL = "Qwen/Qwen2-VL-2B-Instruct"
MIB = 2**20
HANG_GUARD = 120.0


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hf-home")
    cache_model(home / "hub", MODEL, vlm_tensors(vision=64 * MIB, embeddings=64 * MIB, linear=128 * MIB),
                QWEN_LIKE_CONFIG)
    return home


@pytest.fixture(scope="module")
def instance(docker_engine: Any) -> Iterator[str]:
    name = f"test-vllm-{secrets.token_hex(4)}"
    yield name
    remove_instance(docker_engine, name)


def vllm_config(image: str, hf_home: Path, instance: str, **more: Any) -> dict[str, Any]:
    return {
        "cache": {"hub_dir": hf_home / "hub"},
        "vllm": {"image": image, "device": "cpu", "instance": instance},
        "models": {MODEL: {"engine": "vllm"}},
        "scheduler": {"load_timeout": 60},
        **more,
    }


def start_daemon(config: dict[str, Any], hf_home: Path) -> RunningDaemon:
    return RunningDaemon(config, env={"HF_HOME": str(hf_home)})


def containers(client: Any, instance: str) -> list[Any]:
    return instance_containers(client, instance)


def running_ids(client: Any, instance: str) -> list[str]:
    return [c.id for c in containers(client, instance) if c.status == "running"]


def container_debug(container: Any) -> dict[str, Any]:
    """FakeVllm's ``/debug``, straight from the container's published port."""
    container.reload()
    port = docker_host.published_port(container, "8000/tcp")
    response = httpx.get(f"http://127.0.0.1:{port}/debug", timeout=30)
    assert response.status_code == 200
    return response.json()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ocrctl_ok(daemon: RunningDaemon, *args: str) -> str:
    result = daemon.ocrctl(*args)
    assert result.returncode == 0, (result.stdout, result.stderr, daemon.stderr()[-3000:])
    return result.stdout


# --- load, chat, ps, cleanup, unload ----------------------------------------------------------------


def test_load_chat_and_unload_run_one_container_through_ocrds_port(docker_engine, fake_vllm_image,
                                                                    hf_home, instance):
    config = vllm_config(fake_vllm_image, hf_home, instance)
    config["vllm"]["args"] = ["--max-model-len", "2048"]
    config["models"][MODEL]["vllm_args"] = ["--max-model-len", "1024", "--disable-custom-all-reduce"]
    with running_daemon(config, env={"HF_HOME": str(hf_home)}) as daemon:
        progress = ocrctl_ok(daemon, "load", MODEL, "--pin")
        assert "starting a container of local/ocrd-fake-vllm" in progress
        assert "[fake_vllm]" in progress  # the container's own log lines are the progress

        model = daemon.ps()[MODEL]
        assert (model["state"], model["engine"], model["device"]) == ("MODEL_STATE_READY", "vllm", "cpu")
        (container,) = containers(docker_engine, instance)
        assert container.status == "running" and container.labels[docker_host.MODEL_LABEL] == MODEL

        client = daemon.openai_client()
        reply = client.chat.completions.create(model=MODEL, messages=user("hello through ocrd"))
        assert reply.choices[0].message.content == f"fake-vllm {MODEL} read: hello through ocrd"
        assert reply.choices[0].finish_reason == "stop"
        stream = client.chat.completions.create(model=MODEL, messages=user("streamed words"), stream=True)
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        assert "".join(pieces).split() == f"fake-vllm {MODEL} read: streamed words".split()
        assert len(pieces) > 1

        # The shared cache is mounted where the image looks, offline, and the model is found there.
        seen = container_debug(container)
        assert seen["env"]["HF_HUB_OFFLINE"] == "1"
        assert seen["env"]["HF_HOME"] == "/root/.cache/huggingface"
        assert f"models--{MODEL.replace('/', '--')}" in seen["hub_cache_entries"]
        assert seen["model_config"] == QWEN_LIKE_CONFIG
        assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""  # vllm.device = "cpu": no GPU
        assert "--gpu-memory-utilization" not in seen["argv"]
        # vllm.args, then the model's own vllm_args, after the catalog's: the model's win.
        assert seen["argv"][-5:] == ["--max-model-len", "2048", "--max-model-len", "1024",
                                     "--disable-custom-all-reduce"]

        # Cleanup keeps what a runner owns and removes a stray container of the same instance.
        stray = docker_engine.containers.create(
            fake_vllm_image, command=["org/stray"],
            labels={docker_host.MANAGED_LABEL: "1", docker_host.MODEL_LABEL: "org/stray",
                    docker_host.INSTANCE_LABEL: instance})
        report = json.loads(ocrctl_ok(daemon, "cleanup", "--json"))
        assert report["removed_containers"] == [stray.id], report
        assert f"kept {MODEL}: pinned" in report["actions"]
        assert [c.id for c in containers(docker_engine, instance)] == [container.id]

        unloaded = daemon.ocrctl("unload", MODEL)
        assert unloaded.returncode == 0, unloaded.stderr
        assert containers(docker_engine, instance) == []
        assert MODEL not in daemon.ps()


def test_first_request_starts_the_container_and_a_crash_mid_stream_fails_it_visibly(
        docker_engine, fake_vllm_image, hf_home, instance):
    with running_daemon(vllm_config(fake_vllm_image, hf_home, instance),
                        env={"HF_HOME": str(hf_home)}) as daemon:
        events: list[str] = []
        with daemon.http() as http, http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "stream": True,
                "messages": user(f"three words then {CRASH_WORD} and more")}) as response:
            assert response.status_code == 200
            events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["message"], error
        assert any("fake-vllm" in event for event in events[:-2])  # words came before the crash

        def failed() -> dict[str, Any] | None:
            model = daemon.ps().get(MODEL)
            return model if model and model["state"] == "MODEL_STATE_FAILED" else None

        model = wait_until(failed, timeout=HANG_GUARD, message="the slot failing")
        assert "container exited with code 17" in model["error"], model
        assert "EngineCore died" in model["error"], model  # the container's last log line
        assert containers(docker_engine, instance) == []  # the crashed container is removed

        # The next request loads it again.
        reply = daemon.openai_client().chat.completions.create(model=MODEL, messages=user("again"))
        assert reply.choices[0].message.content.endswith("read: again")
        assert len(running_ids(docker_engine, instance)) == 1
    assert containers(docker_engine, instance) == []  # SIGTERM stopped and removed it


# --- restarts of ocrd ------------------------------------------------------------------------------


def test_after_sigkill_the_container_is_adopted_and_after_a_config_change_removed(
        docker_engine, fake_vllm_image, hf_home, instance, tmp_path):
    config = vllm_config(fake_vllm_image, hf_home, instance)
    first = start_daemon(config, hf_home)
    try:
        ocrctl_ok(first, "load", MODEL)
        (started,) = running_ids(docker_engine, instance)
    finally:
        first.send_signal(signal.SIGKILL)
        first.process.wait(timeout=HANG_GUARD)
        first.close()
    assert running_ids(docker_engine, instance) == [started]  # left behind, as a crash would

    # The same configuration: the same container, ready without a load.
    with running_daemon(config, env={"HF_HOME": str(hf_home)}) as second:
        model = second.ps()[MODEL]
        assert model["state"] == "MODEL_STATE_READY", (model, second.stderr()[-3000:])
        assert running_ids(docker_engine, instance) == [started]
        reply = second.openai_client().chat.completions.create(model=MODEL, messages=user("adopted"))
        assert reply.choices[0].message.content.endswith("read: adopted")
        assert running_ids(docker_engine, instance) == [started]
        second.send_signal(signal.SIGKILL)
        second.process.wait(timeout=HANG_GUARD)
        second.exit_code = second.process.returncode  # so leaving the block does not stop it again
    assert running_ids(docker_engine, instance) == [started]

    # Another hub path (a link to the same cache): another mount, so another container.
    moved_hub = tmp_path / "hub-link"
    moved_hub.symlink_to(hf_home / "hub")
    changed = vllm_config(fake_vllm_image, hf_home, instance, cache={"hub_dir": moved_hub})
    with running_daemon(changed, env={"HF_HOME": str(hf_home)}) as third:
        assert containers(docker_engine, instance) == [], third.stderr()[-3000:]
        assert MODEL not in third.ps()
        assert "its configuration differs from the current one" in third.stderr()
        ocrctl_ok(third, "load", MODEL)
        assert len(running_ids(docker_engine, instance)) == 1
    # A clean stop (SIGTERM) leaves nothing behind.
    assert containers(docker_engine, instance) == []


# --- failures --------------------------------------------------------------------------------------


def test_a_missing_image_is_one_clear_error_and_leaves_nothing(docker_engine, hf_home, instance):
    image = f"local/ocrd-no-such-image:{secrets.token_hex(4)}"
    with running_daemon(vllm_config(image, hf_home, instance), env={"HF_HOME": str(hf_home)}) as daemon:
        result = daemon.ocrctl("load", MODEL)
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("ocrctl: ")
        assert f"the image {image} is not on this host and ocrd never pulls implicitly" in line
        assert daemon.ps()[MODEL]["state"] == "MODEL_STATE_FAILED"
        assert containers(docker_engine, instance) == []
        with pytest.raises(openai.APIStatusError) as failure:
            daemon.openai_client().chat.completions.create(model=MODEL, messages=user("hi"))
        assert "never pulls implicitly" in failure.value.message
    assert containers(docker_engine, instance) == []
