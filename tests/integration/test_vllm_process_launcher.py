"""``VllmProcessRunner`` with a stand-in for vLLM's ``api_server`` (``tests/support/fake_api_server.py``):
the real launcher, the real parent-death bootstrap and process group, the real readiness checks
over HTTP; only the program that answers is small. It starts a helper in its group as vLLM starts
its engine core, fails its load, ignores SIGTERM, as each test asks. Real vLLM runs the same
launcher in test_vllm_process.py (marked ``vllm``). Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ocrd.catalog import CatalogEntry
from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import LoadProgress, RunnerSpec
from ocrd.runners.lifecycle import group_members
from ocrd.runners.vllm.process import API_SERVER_MODULE, VllmProcessRunner
from tests.support.fake_api_server import install_as_vllm

MODEL = "org/fake-model"
HANG_GUARD = 60.0


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie that nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """The daemon's environment, with the stand-in importable as vLLM's api_server."""
    return {**os.environ, "PYTHONPATH": str(install_as_vllm(tmp_path / "site"))}


class Launched:
    """A runner with what it reported: progress events and on_exit reasons."""

    def __init__(self, environ: dict[str, str], python: str = sys.executable, **env: str):
        spec = RunnerSpec(model=CatalogEntry(id=MODEL, engines=("vllm",)), engine="vllm", device="cpu",
                          options={"launcher": "process", "load_timeout": HANG_GUARD, "env": env},
                          python=python)
        self.runner = VllmProcessRunner(spec, environ=environ)
        self.progress: list[LoadProgress] = []
        self.exits: list[str] = []
        self.exited = asyncio.Event()

    async def start(self) -> Launched:
        def on_exit(reason: str) -> None:
            self.exits.append(reason)
            self.exited.set()

        await asyncio.wait_for(self.runner.start(self.progress.append, on_exit), HANG_GUARD)
        return self

    def helper(self) -> int:
        """The pid of the stand-in's helper (its "engine core"), from its log."""
        [line] = [line for line in self.runner.log_buffer.tail(100) if "helper pid" in line]
        return int(line.split()[-1])


@pytest_asyncio.fixture
async def launched() -> AsyncIterator[list[Launched]]:
    """Runners a test launched; each is stopped afterwards, so nothing outlives the test."""
    runners: list[Launched] = []
    yield runners
    for item in runners:
        await item.runner.stop(0)


async def launch(launched: list[Launched], environ: dict[str, str], **env: str) -> Launched:
    item = Launched(environ, **env)
    launched.append(item)
    return await item.start()


async def test_the_server_runs_in_its_own_group_with_its_helper_and_answers(launched, environ):
    item = await launch(launched, environ, FAKE_SERVER_HELPER="1")
    runner = item.runner
    pid = runner.pid
    assert pid is not None
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    # The bootstrap exec'd the server in place: its own command line, its own group.
    assert argv[:3] == [sys.executable, "-m", API_SERVER_MODULE]
    assert os.getpgid(pid) == pid != os.getpgid(0)
    assert sorted(group_members(pid)) == sorted([pid, item.helper()])
    assert runner.memory_bytes > 0  # resident memory of the whole group
    response = await runner.client().get("/v1/models")
    assert [model["id"] for model in response.json()["data"]] == [MODEL]


async def test_log_lines_of_both_streams_were_load_progress_and_stay_in_the_log(launched, environ, caplog):
    caplog.set_level(logging.INFO, logger="ocrd.runner.vllm")
    item = await launch(launched, environ)
    loading = [event.message for event in item.progress if event.stage == "loading"]
    assert any("non-default args" in message for message in loading), loading
    assert any("loading the model" in message for message in loading), loading  # its stderr
    assert "ready-check" in [event.stage for event in item.progress]
    lines = await item.runner.logs(100)
    assert any("Application startup complete." in line for line in lines), lines
    journal = [record.getMessage() for record in caplog.records if record.name.startswith("ocrd.runner.vllm.")]
    assert any("Application startup complete." in message for message in journal)


async def test_a_crashed_server_ends_its_helper_and_on_exit_says_why_once(launched, environ):
    item = await launch(launched, environ, FAKE_SERVER_HELPER="1")
    pid, helper = item.runner.pid, item.helper()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the server only: its helper must not outlive it
    await asyncio.wait_for(item.exited.wait(), HANG_GUARD)
    assert len(item.exits) == 1
    assert item.exits[0].startswith("the vLLM server exited (killed by SIGKILL): ")
    assert group_members(pid) == [] and not alive(helper)
    assert item.runner.pid is None and item.runner.memory_bytes == 0
    await asyncio.sleep(0.5)
    assert len(item.exits) == 1
    await item.runner.stop(5)  # the scheduler may still stop it: nothing left, no second report
    assert len(item.exits) == 1


async def test_stop_ends_the_server_and_its_helper_and_is_no_crash(launched, environ):
    item = await launch(launched, environ, FAKE_SERVER_HELPER="1")
    pid = item.runner.pid
    assert pid is not None
    await asyncio.wait_for(item.runner.stop(HANG_GUARD), HANG_GUARD * 2)
    assert group_members(pid) == [] and item.runner.pid is None
    assert any("shutting down" in line for line in await item.runner.logs(10))  # it was asked first
    await asyncio.sleep(0.3)
    assert item.exits == []


async def test_a_server_ignoring_sigterm_is_killed_with_its_helper_after_the_grace(launched, environ):
    item = await launch(launched, environ, FAKE_SERVER_HELPER="1", FAKE_SERVER_IGNORE_SIGTERM="1")
    pid = item.runner.pid
    assert pid is not None
    await asyncio.wait_for(item.runner.stop(0.5), HANG_GUARD)
    assert group_members(pid) == [] and item.runner.pid is None
    assert item.exits == []


async def test_an_exit_during_start_up_fails_the_load_with_the_servers_last_lines(environ):
    item = Launched(environ, FAKE_SERVER_EXIT_CODE="3", FAKE_SERVER_HELPER="1")
    with pytest.raises(ModelLoadFailed) as failure:
        await item.start()
    message = str(failure.value)
    assert message.startswith(f"{MODEL}: the vLLM server exited during start-up with code 3; its last log lines: ")
    assert "error: the model does not fit" in message
    assert item.runner.pid is None and not alive(item.helper())
    assert item.exits == []


async def test_an_interpreter_that_cannot_run_fails_the_load(environ):
    item = Launched(environ, python="/nonexistent/python")
    with pytest.raises(ModelLoadFailed, match=f"^{MODEL}: cannot run /nonexistent/python: "):
        await item.start()
    assert item.runner.pid is None
