"""DockerRunner on a real Docker engine, with FakeVllm (tests/support/fake_vllm) in place of vLLM.

Everything but vLLM's engine is real: the image (built locally, never pulled), the container with
its labels, mounts, published port and init, its logs and exit codes, and Docker's own errors (no
NVIDIA runtime on this host, a port in use). Each test runs under its own ``ocrd.instance``, and
whatever it leaves is removed by the fixture; the tests that say "nothing left" check it themselves
first. Timeouts are hang guards only; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrd.catalog import CatalogEntry
from ocrd.errors import ModelLoadFailed
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.base import LoadProgress, RunnerSpec
from ocrd.runners.vllm import docker_host
from ocrd.runners.vllm.container import DockerRunner, adopt, container_gpu_bytes
from ocrd.runners.vllm.container_spec import container_name
from tests.support.docker_engine import instance_containers, remove_instance, runner_labels
from tests.support.fake_nvml import FakeDevice, FakeNvml
from tests.support.fake_vllm.server import CRASH_EXIT_CODE, CRASH_WORD

pytestmark = pytest.mark.docker

MODEL = "org/fake-ocr"
HANG_GUARD = 120.0
GIB = 2**30
REPO = Path(__file__).resolve().parents[2]


# --- helpers -------------------------------------------------------------------------------------


def cached_model(hub_dir: Path, repo_id: str, marker: str) -> str:
    """A snapshot laid out as huggingface_hub does (blob + relative symlink + refs/main)."""
    repo = hub_dir / f"models--{repo_id.replace('/', '--')}"
    config = json.dumps({"model_type": "fake", "marker": marker}).encode()
    blob = hashlib.sha256(config).hexdigest()
    revision = hashlib.sha1(marker.encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / blob).write_bytes(config)
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / "config.json").symlink_to(f"../../blobs/{blob}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return revision


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    home = tmp_path / "hf-home"
    cached_model(home / "hub", MODEL, "through-the-mount")
    return home


def vllm_spec(image: str, home: Path, instance: str, *, model_id: str = MODEL, device: str = "cpu",
              env: dict[str, str] | None = None, **options: Any) -> RunnerSpec:
    """The runner's spec with ``home`` as HF_HOME; ``options`` override the defaults."""
    opts = {"image": image, "hub_dir": str(home / "hub"), "hf_home": str(home),
            "instance": instance, "labels": runner_labels(), "load_timeout": 60.0, **options}
    return RunnerSpec(model=CatalogEntry(id=model_id, engines=("vllm",)), engine="vllm", device=device,
                      options=opts, env=env or {})


class Events:
    """What a runner reported: progress events and on_exit reasons."""

    def __init__(self) -> None:
        self.progress: list[LoadProgress] = []
        self.exits: list[str] = []
        self.exited = asyncio.Event()

    def on_progress(self, event: LoadProgress) -> None:
        self.progress.append(event)

    def on_exit(self, reason: str) -> None:
        self.exits.append(reason)
        self.exited.set()

    @property
    def messages(self) -> list[str]:
        return [event.message for event in self.progress]


async def started(spec: RunnerSpec, docker: Any) -> tuple[DockerRunner, Events]:
    runner, events = DockerRunner(spec, docker=docker), Events()
    await asyncio.wait_for(runner.start(events.on_progress, events.on_exit), HANG_GUARD)
    return runner, events


async def failed_start(spec: RunnerSpec, docker: Any) -> tuple[str, Events]:
    runner, events = DockerRunner(spec, docker=docker), Events()
    with pytest.raises(ModelLoadFailed) as failure:
        await asyncio.wait_for(runner.start(events.on_progress, events.on_exit), HANG_GUARD)
    return failure.value.message, events


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **extra}


async def debug_info(runner: DockerRunner) -> dict[str, Any]:
    response = await runner.client().get("/debug")
    assert response.status_code == 200
    return response.json()


async def stream_events(runner: DockerRunner, body: dict[str, Any], seen: list[dict] | None = None) -> list[Any]:
    events: list[Any] = [] if seen is None else seen
    async with runner.client().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def container_events(client: Any, instance: str, since: int) -> list[str]:
    """Create/destroy events of ``instance``'s containers from ``since`` until now, in order."""
    until = int(time.time()) + 1  # the engine's clock has whole seconds here: include this one
    stream = client.events(since=since, until=until, decode=True,
                           filters={"type": "container", "label": f"{docker_host.INSTANCE_LABEL}={instance}"})
    return [e["Action"] for e in stream if e["Action"] in ("create", "destroy")]


def container_exists(client: Any, container_id: str) -> bool:
    from docker.errors import NotFound

    try:
        client.containers.get(container_id)
    except NotFound:
        return False
    return True


# --- a healthy container -------------------------------------------------------------------------


async def test_chat_stream_and_non_stream_through_the_container_then_stop_removes_it(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    runner, events = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    container_id = runner.container_id
    try:
        reply = await runner.client().post("/v1/chat/completions", json=chat("hello through ocrd"))
        assert reply.status_code == 200
        answer = reply.json()["choices"][0]
        assert answer["message"]["content"] == f"fake-vllm {MODEL} read: hello through ocrd"
        assert answer["finish_reason"] == "stop"

        streamed = await stream_events(runner, chat("hello through ocrd"))
        assert streamed[-1] == "[DONE]"
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in streamed[:-1] if e["choices"])
        assert text == answer["message"]["content"]
        assert streamed[-2]["choices"][0]["finish_reason"] == "stop"
    finally:
        await runner.stop(grace=5)
    assert not container_exists(docker_engine, container_id)
    assert events.exits == []  # a stop is not an exit
    assert runner.pid is None and runner.memory_bytes == 0


async def test_progress_events_carry_the_container_log_lines(docker_engine, fake_vllm_image, docker_instance,
                                                             hf_home):
    runner, events = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    await runner.stop(grace=5)
    assert any("Loading weights of org/fake-ocr" in m for m in events.messages)
    assert any("Application startup complete" in m for m in events.messages)
    assert any("/health answers" in m for m in events.messages)


async def test_container_carries_ocrd_labels_and_its_config_hash(docker_engine, fake_vllm_image, docker_instance,
                                                                 hf_home):
    runner, _ = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    try:
        labels = docker_engine.containers.get(runner.container_id).labels
        assert labels[docker_host.MANAGED_LABEL] == "1"
        assert labels[docker_host.MODEL_LABEL] == MODEL
        assert labels[docker_host.INSTANCE_LABEL] == docker_instance
        assert labels[docker_host.CONFIG_HASH_LABEL] == runner.config().config_hash
    finally:
        await runner.stop(grace=5)


async def test_port_is_published_on_loopback_only(docker_engine, fake_vllm_image, docker_instance, hf_home):
    runner, _ = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    try:
        container = docker_engine.containers.get(runner.container_id)
        bindings = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        port = int(bindings[0]["HostPort"])
        # The Docker bridge's address is this host's too: the port must not answer there.
        gateway = container.attrs["NetworkSettings"]["Gateway"]
        with pytest.raises(OSError):
            socket.create_connection((gateway, port), timeout=5).close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        await runner.stop(grace=5)


async def test_pid_and_memory_are_the_containers(docker_engine, fake_vllm_image, docker_instance, hf_home):
    runner, _ = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    try:
        container = docker_engine.containers.get(runner.container_id)
        assert runner.pid == container.attrs["State"]["Pid"]
        assert runner.pid in docker_host.container_pids(container)
        assert runner.memory_bytes > 0
    finally:
        await runner.stop(grace=5)


async def test_gpu_memory_is_what_nvml_gives_the_containers_processes(docker_engine, fake_vllm_image,
                                                                      docker_instance, hf_home):
    runner, _ = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    try:
        server_pid, init_pid = 0, runner.pid
        for pid in docker_host.container_pids(docker_engine.containers.get(runner.container_id)):
            if pid != init_pid:
                server_pid = pid
        # NVML (faked: no GPU here) lists the container's server and an unrelated process.
        nvml = FakeNvml([FakeDevice("GPU", "GPU-0", total=80 * GIB, used=9 * GIB,
                                    processes=[(server_pid, 6 * GIB), (os.getpid(), 3 * GIB)])])
        pids = docker_host.container_pids(docker_engine.containers.get(runner.container_id))
        assert container_gpu_bytes(GpuProbe(nvml).snapshot(), pids) == 6 * GIB
    finally:
        await runner.stop(grace=5)


async def test_logs_are_readable_and_followable(docker_engine, fake_vllm_image, docker_instance, hf_home):
    runner, _ = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    try:
        assert any("Application startup complete" in line for line in await runner.logs(tail=50))
        follower = runner.follow_logs(tail=0)
        next_line = asyncio.ensure_future(follower.__anext__())
        await runner.client().get("/v1/models")
        assert '"GET /v1/models HTTP/1.1" 200' in await asyncio.wait_for(next_line, HANG_GUARD)
        await follower.aclose()
    finally:
        await runner.stop(grace=5)


# --- what the container sees ---------------------------------------------------------------------


async def test_vllm_arguments_cache_mount_and_offline_mode_are_visible_inside(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    catalog_args = ["--trust-remote-code", "--max-model-len", "2048", "--limit-mm-per-prompt", '{"image": 1}']
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, offline=True, gpu_memory_utilization=0.35,
                     args=catalog_args, env={"VLLM_EXTRA": "from-spec"})
    runner, _ = await started(spec, docker_engine)
    try:
        seen = await debug_info(runner)
    finally:
        await runner.stop(grace=5)
    assert seen["argv"] == ["serve", MODEL, "--served-model-name", MODEL, "--host", "0.0.0.0", "--port", "8000",
                            "--gpu-memory-utilization", "0.35", *catalog_args]
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"
    assert seen["env"]["HF_HOME"] == "/root/.cache/huggingface"
    assert seen["env"]["HF_HUB_CACHE"] == "/root/.cache/huggingface/hub"
    assert seen["env"]["VLLM_EXTRA"] == "from-spec"
    # The model's config came from the host's cache, through the mount and its blob symlink.
    assert seen["model_config"] == {"model_type": "fake", "marker": "through-the-mount"}
    assert seen["hub_cache_entries"] == ["models--org--fake-ocr"]
    # ipc=host by default (vLLM's shared-memory tensors): the host's IPC namespace.
    assert seen["ipc_namespace"] == os.readlink("/proc/self/ns/ipc")


async def test_hub_dir_outside_hf_home_and_a_non_root_user(docker_engine, fake_vllm_image, docker_instance,
                                                           tmp_path):
    hub_dir = tmp_path / "elsewhere" / "hub"
    cached_model(hub_dir, MODEL, "hub-only")
    spec = vllm_spec(fake_vllm_image, tmp_path, docker_instance, hub_dir=str(hub_dir), hf_home=None,
                     offline=True, user="vllm", shm_size="256m")
    runner, _ = await started(spec, docker_engine)
    try:
        seen = await debug_info(runner)
    finally:
        await runner.stop(grace=5)
    assert seen["uid"] == 1000
    assert seen["env"]["HF_HOME"] == "/home/vllm/.cache/huggingface"
    assert seen["env"]["HF_HUB_CACHE"] == "/home/vllm/.cache/huggingface/hub"
    assert seen["model_config"] == {"model_type": "fake", "marker": "hub-only"}
    assert seen["shm_bytes"] == 256 * 2**20
    assert seen["ipc_namespace"] != os.readlink("/proc/self/ns/ipc")


async def test_offline_start_of_a_model_missing_from_the_cache_fails_with_vllms_words(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, model_id="org/not-cached", offline=True)
    message, _ = await failed_start(spec, docker_engine)
    assert "exited during start-up with code 1" in message
    assert "org/not-cached is not in the cache" in message
    assert instance_containers(docker_engine, docker_instance) == []


# --- failures ------------------------------------------------------------------------------------


async def test_exit_during_start_up_fails_with_the_last_log_lines_and_leaves_nothing(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, env={"FAKE_VLLM_EXIT_CODE": "3"})
    message, events = await failed_start(spec, docker_engine)
    assert message.startswith(f"{MODEL}: the vLLM container exited during start-up with code 3")
    assert "fake engine failed to load org/fake-ocr" in message
    assert "\n" not in message
    assert any("Loading weights" in m for m in events.messages)
    assert instance_containers(docker_engine, docker_instance) == []


async def test_load_timeout_removes_the_container_and_quotes_its_log(docker_engine, fake_vllm_image,
                                                                     docker_instance, hf_home):
    """The load timeout counts from the container's start, and a container is slow to say anything
    on a loaded machine; so the container (the very one the runner would create) is started here,
    and the runner takes it over once its log says it is still loading: the timeout then always
    has that line to quote."""
    still_loading = "still loading (FAKE_VLLM_NEVER_READY=1)"
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, env={"FAKE_VLLM_NEVER_READY": "1"},
                     load_timeout=1.0)
    runner, events = DockerRunner(spec, docker=docker_engine), Events()
    container = docker_engine.containers.create(**runner.config().create_kwargs(container_name(MODEL)))
    container.start()
    deadline = time.monotonic() + HANG_GUARD
    while still_loading not in container.logs().decode() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    container.reload()
    runner.attach(container)
    with pytest.raises(ModelLoadFailed) as failure:
        await asyncio.wait_for(runner.start(events.on_progress, events.on_exit), HANG_GUARD)
    message = failure.value.message
    assert message.startswith(f"{MODEL}: the vLLM container did not become ready within 1s; its last log lines: ")
    assert still_loading in message
    assert instance_containers(docker_engine, docker_instance) == []


async def test_missing_image_fails_in_one_line_and_pulls_nothing(docker_engine, docker_instance, hf_home):
    image = "local/ocrd-no-such-image:never"
    message, _ = await failed_start(vllm_spec(image, hf_home, docker_instance), docker_engine)
    assert message == (f"{MODEL}: the image {image} is not on this host and ocrd never pulls implicitly: "
                       f"`ocrctl pull-image {image}`, or set vllm.pull_images = true")
    assert not docker_host.image_present(docker_engine, image)
    assert instance_containers(docker_engine, docker_instance) == []


async def test_gpu_request_without_nvidia_runtime_is_one_line_and_leaves_nothing(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    if docker_host.docker_status().nvidia_runtime:
        pytest.skip("this engine has the NVIDIA runtime: a GPU request would succeed")
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, device="cuda:0", gpu_memory_utilization=0.4)
    message, _ = await failed_start(spec, docker_engine)
    assert message == f"{MODEL}: {docker_host.NVIDIA_RUNTIME_HINT}"
    assert instance_containers(docker_engine, docker_instance) == []


async def test_port_in_use_is_one_line_and_leaves_nothing(docker_engine, fake_vllm_image, docker_instance,
                                                          hf_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, host_port=port)
        message, _ = await failed_start(spec, docker_engine)
    assert message == f"{MODEL}: 127.0.0.1:{port} is already in use on this host: free it, or choose another port"
    assert instance_containers(docker_engine, docker_instance) == []


@pytest.mark.parametrize("cancel_at", ["starting a container", "Loading weights"])
async def test_a_cancelled_start_leaves_no_container(docker_engine, fake_vllm_image, docker_instance, hf_home,
                                                     cancel_at):
    """The scheduler cancels start() on its load timeout: while Docker creates the container, or
    while the server loads."""
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance, env={"FAKE_VLLM_NEVER_READY": "1"})
    runner, events = DockerRunner(spec, docker=docker_engine), Events()

    def cancel_on(event: LoadProgress) -> None:
        events.on_progress(event)
        if cancel_at in event.message:
            start.cancel()

    since = int(time.time()) - 1
    start = asyncio.ensure_future(runner.start(cancel_on, events.on_exit))
    await asyncio.wait([start], timeout=HANG_GUARD)
    assert start.cancelled()
    assert any(cancel_at in m for m in events.messages)
    # By the time start() gave up, its container was created and is gone again (not created
    # later by a thread nobody waits for).
    assert container_events(docker_engine, docker_instance, since) == ["create", "destroy"]
    assert instance_containers(docker_engine, docker_instance) == []
    assert runner.container_id is None


async def test_crash_mid_stream_fails_the_stream_calls_on_exit_once_and_removes_the_container(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    runner, events = await started(vllm_spec(fake_vllm_image, hf_home, docker_instance), docker_engine)
    container_id = runner.container_id
    received: list[Any] = []
    try:
        with pytest.raises(httpx.HTTPError):
            await stream_events(runner, chat(f"start then {CRASH_WORD} please"), received)
        await asyncio.wait_for(events.exited.wait(), HANG_GUARD)
    finally:
        await runner.stop(grace=5)
    assert received and "[DONE]" not in received  # it had started, and never finished
    assert len(events.exits) == 1
    assert events.exits[0].startswith(f"container exited with code {CRASH_EXIT_CODE}: ")
    assert "EngineCore died" in events.exits[0]
    assert not container_exists(docker_engine, container_id)
    assert runner.pid is None


# --- adoption after a daemon was SIGKILLed -------------------------------------------------------

_DOOMED_DAEMON = """
import asyncio, json, sys
from ocrd.catalog import CatalogEntry
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.container import DockerRunner

async def main():
    for model_id, options in json.loads(sys.argv[1]):
        spec = RunnerSpec(CatalogEntry(id=model_id, engines=("vllm",)), "vllm", "cpu", options)
        runner = DockerRunner(spec)
        await runner.start(lambda event: None, lambda reason: None)
        print(runner.container_id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def containers_of_a_killed_daemon(specs: list[RunnerSpec]) -> list[str]:
    """Starts ``specs`` in a separate process, SIGKILLs it once they run; their container ids."""
    plan = json.dumps([[spec.model.id, spec.options] for spec in specs])
    process = subprocess.Popen([sys.executable, "-c", _DOOMED_DAEMON, plan], stdout=subprocess.PIPE, text=True,
                               cwd=REPO)
    try:
        ids = [process.stdout.readline().strip() for _ in specs]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=HANG_GUARD)
    assert all(ids), "the doomed daemon did not start its containers"
    return ids


async def test_restart_adopts_matching_containers_and_removes_the_others(docker_engine, fake_vllm_image,
                                                                         docker_instance, hf_home):
    kept = vllm_spec(fake_vllm_image, hf_home, docker_instance, gpu_memory_utilization=0.3)
    changed = vllm_spec(fake_vllm_image, hf_home, docker_instance, model_id="org/changed",
                        gpu_memory_utilization=0.3)
    dropped = vllm_spec(fake_vllm_image, hf_home, docker_instance, model_id="org/dropped")
    other_instance = vllm_spec(fake_vllm_image, hf_home, f"{docker_instance}-other")
    kept_id, changed_id, dropped_id, other_id = containers_of_a_killed_daemon([kept, changed, dropped,
                                                                               other_instance])
    try:
        now = {MODEL: kept, "org/changed": vllm_spec(fake_vllm_image, hf_home, docker_instance,
                                                     model_id="org/changed", gpu_memory_utilization=0.5)}
        adoption = await asyncio.wait_for(adopt(lambda model, _labels: now.get(model),
                                                instance=docker_instance, docker=docker_engine),
                                          HANG_GUARD)
        assert [runner.container_id for runner in adoption.adopted] == [kept_id]
        assert sorted(line.split(" (")[1].split(")")[0] for line in adoption.removed) == ["org/changed",
                                                                                        "org/dropped"]
        assert any("configuration differs" in line for line in adoption.removed)
        assert any("not configured to run any more" in line for line in adoption.removed)
        assert not container_exists(docker_engine, changed_id)
        assert not container_exists(docker_engine, dropped_id)
        assert container_exists(docker_engine, other_id)  # another daemon's: never touched

        runner, events = adoption.adopted[0], Events()
        await asyncio.wait_for(runner.start(events.on_progress, events.on_exit), HANG_GUARD)
        assert any("adopting container" in m for m in events.messages)
        reply = await runner.client().post("/v1/chat/completions", json=chat("after the restart"))
        assert reply.json()["choices"][0]["message"]["content"].endswith("read: after the restart")
        await runner.stop(grace=5)
        assert instance_containers(docker_engine, docker_instance) == []
    finally:
        remove_instance(docker_engine, f"{docker_instance}-other")


async def test_adoption_removes_an_exited_container_even_when_its_config_matches(
        docker_engine, fake_vllm_image, docker_instance, hf_home):
    spec = vllm_spec(fake_vllm_image, hf_home, docker_instance)
    (container_id,) = containers_of_a_killed_daemon([spec])
    docker_engine.containers.get(container_id).stop(timeout=5)
    adoption = await asyncio.wait_for(adopt(lambda model, _labels: {MODEL: spec}.get(model),
                                            instance=docker_instance, docker=docker_engine),
                                      HANG_GUARD)
    assert adoption.adopted == []
    assert len(adoption.removed) == 1 and "it is exited" in adoption.removed[0]
    assert instance_containers(docker_engine, docker_instance) == []
