"""`ocrctl logs MODEL [-n N] [-f]` and the Logs RPC, over real runners.

* A real ``ocrd serve`` with the real builtin runner (PP-OCR): the worker logs its start-up on
  stderr ("warm-up ...", uvicorn's "Started server process") and one access line per request
  ("POST /v1/chat/completions HTTP/1.1" 200), which is how a test makes it write a known line
  while ``ocrctl logs -f`` follows it.
* A real Docker container (the fake vLLM image, tests/support/fake_vllm) behind the real Scheduler
  and the real gRPC server: the Logs RPC reads the container's log.
* The status codes of a model that is unknown or not loaded, over real gRPC (FakeRunners there:
  nothing runs).

Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import threading
from typing import Any

import grpc
import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer, DaemonInfo
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.core.scheduler import Scheduler
from ocrd.events import EventBus
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.container import DockerRunner
from tests.integration.test_docker_runner import cached_model, vllm_spec
from tests.support.control import PPOCR
from tests.support.daemon import (
    OCRCTL,
    REPO,
    daemon_env,
    ocr_messages,
    pid_alive,
    running_daemon,
    wait_until,
)
from tests.support.render import render_text_image

HANG_GUARD = 120.0
ACCESS_LINE = '"POST /v1/chat/completions HTTP/1.1" 200'
START_UP_LINE = "INFO uvicorn.error: Started server process"


# --- a real daemon, the real builtin runner ------------------------------------------------------


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


@pytest.fixture
def ppocr_loaded(daemon):
    """PP-OCR loaded for the test, unloaded after it (whatever the test did)."""
    result = daemon.ocrctl("load", "ppocr")
    assert result.returncode == 0, result.stderr
    yield daemon
    if PPOCR in daemon.ps():
        assert daemon.ocrctl("unload", "ppocr").returncode == 0


def recognise(daemon: Any) -> None:
    with daemon.http() as http:
        response = http.post("/v1/chat/completions", json={
            "model": "ppocr", "messages": ocr_messages(render_text_image(["follow me"]))})
    assert response.status_code == 200, response.text[:500]


class Follower:
    """``ocrctl logs ... -f`` as its own process; its stdout lines arrive on a queue."""

    def __init__(self, daemon: Any, *args: str):
        self.process = subprocess.Popen(
            [OCRCTL, "--address", str(daemon.socket_path), "logs", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon_env(), cwd=REPO,
            stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line_with(self, text: str) -> str:
        """The first line (from here on) that contains ``text``; fails if the output ends first."""
        while (line := self.lines.get(timeout=HANG_GUARD)) is not None:
            if text in line:
                return line
        raise AssertionError(f"`ocrctl logs` ended before printing {text!r}: {self.stderr()}")

    def wait(self) -> int:
        return self.process.wait(timeout=HANG_GUARD)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_logs_show_the_runner_start_up_lines(ppocr_loaded):
    result = ppocr_loaded.ocrctl("logs", "ppocr")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("INFO ocrd.worker: warm-up" in line for line in lines), lines
    assert START_UP_LINE in lines[-1]  # the last thing it said before serving
    assert result.stderr == ""


def test_tail_limits_the_lines_and_json_gives_one_object_per_line(ppocr_loaded):
    everything = ppocr_loaded.ocrctl("logs", "ppocr").stdout.splitlines()
    assert len(everything) > 2

    last_two = ppocr_loaded.ocrctl("logs", "ppocr", "-n", "2", "--json")
    assert last_two.returncode == 0, last_two.stderr
    objects = [json.loads(line) for line in last_two.stdout.splitlines()]
    assert objects == [{"model": PPOCR, "line": line} for line in everything[-2:]]

    none = ppocr_loaded.ocrctl("logs", "ppocr", "--tail", "0")
    assert (none.returncode, none.stdout) == (0, "")


def test_requests_show_up_in_the_log(ppocr_loaded):
    before = ppocr_loaded.ocrctl("logs", "ppocr").stdout
    recognise(ppocr_loaded)
    after = ppocr_loaded.ocrctl("logs", "ppocr").stdout
    assert before.count(ACCESS_LINE) + 1 == after.count(ACCESS_LINE)


def test_requests_cost_the_daemons_journal_no_line_at_the_default_log_level(ppocr_loaded):
    # One line per request, from the runner's access log or httpx, would flood the journal
    # under load; they are for log_level = "debug" (the runner's own log above keeps its lines).
    before = ppocr_loaded.stderr()
    for _ in range(3):
        recognise(ppocr_loaded)
    added = ppocr_loaded.stderr()[len(before):]
    assert ACCESS_LINE not in added and "HTTP Request:" not in added, added


def test_follow_prints_new_lines_live_and_ends_when_the_model_unloads(ppocr_loaded):
    daemon = ppocr_loaded
    follower = Follower(daemon, "ppocr", "-f", "-n", "1")
    try:
        # The tail arrives first: from then on the follower is subscribed.
        follower.next_line_with(START_UP_LINE)
        recognise(daemon)
        assert ACCESS_LINE in follower.next_line_with(ACCESS_LINE)

        assert daemon.ocrctl("unload", "ppocr").returncode == 0
        assert follower.wait() == 0
        assert follower.stderr() == ""
    finally:
        follower.kill()


def test_follow_ends_when_the_runner_dies(ppocr_loaded):
    daemon = ppocr_loaded
    pid = daemon.ps()[PPOCR]["pid"]
    follower = Follower(daemon, "ppocr", "--follow", "--tail", "1")
    try:
        follower.next_line_with(START_UP_LINE)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), timeout=HANG_GUARD, message="runner gone")
        assert follower.wait() == 0
    finally:
        follower.kill()
    assert daemon.ps()[PPOCR]["state"] == "MODEL_STATE_FAILED"


def test_ctrl_c_ends_following_quietly(ppocr_loaded):
    follower = Follower(ppocr_loaded, "ppocr", "-f")
    try:
        follower.next_line_with(START_UP_LINE)
        follower.process.send_signal(signal.SIGINT)
        assert follower.wait() == 0
        assert follower.stderr() == ""
    finally:
        follower.kill()


def test_a_model_not_loaded_fails_with_one_line_saying_to_load_it(daemon):
    assert PPOCR not in daemon.ps()
    result = daemon.ocrctl("logs", "ppocr")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"ocrctl: model '{PPOCR}' is not loaded; "
                             f"load it with `ocrctl load {PPOCR}`\n")


def test_a_negative_tail_is_a_usage_error(daemon):
    result = daemon.ocrctl("logs", "ppocr", "-n", "-3")
    assert result.returncode == 2
    assert "the number of lines must be 0 or more" in result.stderr


# --- status codes over real gRPC (FakeRunners: nothing runs) ---------------------------------------


async def first_error(stub: control_pb2_grpc.ControlStub, request: pb.LogsRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in stub.Logs(request, timeout=HANG_GUARD):
            pass
    return failure.value


async def test_unknown_model_is_not_found(stub):
    error = await first_error(stub, pb.LogsRequest(model="no/such-model"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "no/such-model" in error.details()


async def test_not_loaded_and_failed_models_are_a_failed_precondition(stub, scheduler, runners):
    error = await first_error(stub, pb.LogsRequest(model="ppocr"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"model '{PPOCR}' is not loaded; load it with `ocrctl load {PPOCR}`"

    await scheduler.load("ppocr")
    runners.made(PPOCR)[0].crash("killed by signal 9")
    error = await first_error(stub, pb.LogsRequest(model="ppocr", follow=True))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (f"model '{PPOCR}' is not loaded (runner exited: killed by signal 9); "
                               f"load it with `ocrctl load {PPOCR}`")


async def test_a_model_still_loading_is_a_failed_precondition(stub, scheduler, runners):
    runners.plan(PPOCR, gated=True)
    load = asyncio.ensure_future(scheduler.load("ppocr"))
    runner = await asyncio.wait_for(runners.wait_started(PPOCR), HANG_GUARD)
    try:
        error = await first_error(stub, pb.LogsRequest(model="ppocr"))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error.details().startswith(f"model '{PPOCR}' is still loading: `ocrctl load {PPOCR}`")
    finally:
        runner.release()
        await asyncio.wait_for(load, HANG_GUARD)


async def test_a_runner_that_keeps_no_log_gives_an_empty_answer(stub, scheduler):
    # FakeRunners keep no log lines: the base Runner's logs() answers nothing, without error.
    await scheduler.load("ppocr")
    lines = [line async for line in stub.Logs(pb.LogsRequest(model="ppocr"), timeout=HANG_GUARD)]
    assert lines == []


# --- a real container behind the real Scheduler -----------------------------------------------------


@pytest.fixture
async def container_scheduler(docker_engine, fake_vllm_image, docker_instance, tmp_path, socket_dir):
    """A control server over a Scheduler whose runners are DockerRunners of the fake vLLM image.

    Whatever engine the planner picks for PP-OCR, the factory serves it from a container: this
    tests the Logs RPC over a real container runner, not the daemon's vLLM wiring (tested with
    the daemon's own tests)."""
    home = tmp_path / "hf-home"
    cached_model(home / "hub", PPOCR, "logs")

    def factory(spec: RunnerSpec) -> DockerRunner:
        return DockerRunner(vllm_spec(fake_vllm_image, home, docker_instance, model_id=spec.model.id),
                            docker=docker_engine)

    config = Settings(grpc={"socket": socket_dir / "ocrd.sock"}, runtime_dir=socket_dir)
    scheduler = Scheduler(config, Catalog.load_default(), factory, EventBus())
    server = await start_control_server(config, ControlServicer(scheduler, DaemonInfo(version="0")))
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            yield scheduler, control_pb2_grpc.ControlStub(channel)
    finally:
        await server.stop(None)
        await scheduler.shutdown()


@pytest.mark.docker
async def test_logs_of_a_container_runner_are_its_container_log(container_scheduler):
    scheduler, stub = container_scheduler
    await asyncio.wait_for(scheduler.load("ppocr"), HANG_GUARD)

    lines = [item async for item in stub.Logs(pb.LogsRequest(model="ppocr", tail=50), timeout=HANG_GUARD)]
    assert {item.model for item in lines} == {PPOCR}
    texts = [item.line for item in lines]
    assert any("[fake_vllm] Loading weights of" in line for line in texts), texts
    assert "INFO:     Application startup complete." in texts
    # The last: the runner's readiness check, which saw the model listed.
    assert '"GET /v1/models HTTP/1.1" 200' in texts[-1]


@pytest.mark.docker
async def test_following_a_container_shows_requests_and_ends_on_unload(container_scheduler):
    scheduler, stub = container_scheduler
    await asyncio.wait_for(scheduler.load("ppocr"), HANG_GUARD)
    stream = stub.Logs(pb.LogsRequest(model="ppocr", tail=1, follow=True), timeout=HANG_GUARD)
    lines = stream.__aiter__()
    # The tail first (the readiness check's request): from then on the stream follows.
    assert '"GET /v1/models HTTP/1.1" 200' in (await lines.__anext__()).line

    async with scheduler.acquire("ppocr") as runner:
        assert (await runner.client().get("/debug")).status_code == 200
    assert '"GET /debug HTTP/1.1" 200' in (await lines.__anext__()).line

    await scheduler.unload("ppocr")
    rest = [item.line async for item in lines]  # the stream ends: the container is gone
    assert all("GET /debug" not in line for line in rest)
    assert await stream.code() is grpc.StatusCode.OK
