"""``ProcessRunner`` on its own, with the real builtin worker (``python -m ocrd.worker``, the
tesseract backend: it loads in about a second): start-up events, its socket, its log, stop, a
crash, and failed loads. The daemon tests (test_daemon_runner_crash.py, test_logs.py,
test_runner_sockets.py) drive the same runner through ``ocrd serve``. Timeouts are hang guards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ocrd.catalog import CatalogEntry
from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import LoadProgress, RunnerSpec
from ocrd.runners.lifecycle import group_members
from ocrd.runners.process import ProcessRunner
from tests.support.worker import temp_workdir, worker_env

MODEL = "builtin/test"
TESSERACT = {"backend": "tesseract", "languages": "eng", "psm": 3}
HANG_GUARD = 120.0
ACCESS_LINE = '"GET /health HTTP/1.1" 200'


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    for workdir in temp_workdir("ocrdr-"):  # short: Unix socket paths are limited to 107 bytes
        yield workdir / "runners"


class Started:
    """A runner with what it reported: progress events and on_exit reasons."""

    def __init__(self, socket_dir: Path, options: dict, python: str | None = None):
        spec = RunnerSpec(model=CatalogEntry(id=MODEL, engines=("builtin",)), engine="builtin", options=options)
        self.runner = ProcessRunner(spec, socket_dir, python=python, env=worker_env())
        self.progress: list[LoadProgress] = []
        self.exits: list[str] = []
        self.exited = asyncio.Event()

    async def start(self) -> Started:
        def on_exit(reason: str) -> None:
            self.exits.append(reason)
            self.exited.set()

        await asyncio.wait_for(self.runner.start(self.progress.append, on_exit), HANG_GUARD)
        return self


@pytest_asyncio.fixture
async def started(socket_dir: Path) -> AsyncIterator[Started]:
    item = Started(socket_dir, TESSERACT)
    try:
        yield await item.start()
    finally:
        await item.runner.stop(0)


async def test_the_worker_reports_progress_leads_its_group_and_serves_on_its_socket(started):
    runner = started.runner
    assert [event.stage for event in started.progress[:2]] == ["checking tesseract", "checking language packs"]
    pid = runner.pid
    assert pid is not None and os.getpgid(pid) == pid != os.getpgid(0)
    assert runner.socket_path.is_socket()
    assert runner.memory_bytes > 10_000_000  # its resident memory
    response = await runner.client().get("/health")
    assert response.json() == {"status": "ok", "model": MODEL}
    assert any("Started server process" in line for line in await runner.logs(100))


async def test_access_lines_stay_in_the_runners_log_and_reach_the_journal_at_debug_only(started, caplog):
    caplog.set_level(logging.DEBUG, logger="ocrd.runner")
    await started.runner.client().get("/health")
    line = await asyncio.wait_for(_line_with(started.runner, ACCESS_LINE), HANG_GUARD)
    [record] = [r for r in caplog.records if r.getMessage() == line]
    assert record.levelno == logging.DEBUG and record.name == "ocrd.runner.builtin.test"


async def test_each_request_gets_one_access_line(started):
    # uvicorn's own line is off (the worker writes it once the response is sent): not two a request.
    client = started.runner.client()
    for number in range(3):
        assert (await client.get(f"/health?request={number}")).status_code == 200
    await asyncio.wait_for(_line_with(started.runner, '"GET /health?request=2 HTTP/1.1" 200'), HANG_GUARD)
    lines = [line for line in await started.runner.logs(200) if "/health?request=" in line]
    assert len(lines) == 3, lines


async def _line_with(runner: ProcessRunner, text: str) -> str:
    async for line in runner.follow_logs(100):
        if text in line:
            return line
    raise AssertionError(f"the log ended without {text!r}")


async def test_stop_ends_the_worker_removes_its_socket_and_ends_its_log(started):
    runner = started.runner
    pid = runner.pid
    assert pid is not None
    await asyncio.wait_for(runner.stop(HANG_GUARD), HANG_GUARD * 2)
    assert runner.pid is None and group_members(pid) == []
    assert not runner.socket_path.exists()
    assert runner.log_buffer.closed  # `ocrctl logs -f` ends
    assert any("Shutting down" in line or "Finished server process" in line for line in await runner.logs(20))
    await asyncio.sleep(0.3)
    assert started.exits == []  # a stop is no crash


async def test_a_killed_worker_is_reported_once_with_the_reason_and_leaves_no_socket(started):
    runner = started.runner
    pid = runner.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(started.exited.wait(), HANG_GUARD)
    assert len(started.exits) == 1
    assert started.exits[0].startswith(f"runner of {MODEL} exited (killed by SIGKILL)")
    assert runner.pid is None and runner.memory_bytes == 0 and group_members(pid) == []
    assert not runner.socket_path.exists()
    await asyncio.sleep(0.3)
    assert len(started.exits) == 1


async def test_a_load_error_event_fails_the_start_with_the_workers_message(socket_dir):
    item = Started(socket_dir, {**TESSERACT, "languages": "eng+xxx"})
    with pytest.raises(ModelLoadFailed) as failure:
        await item.start()
    assert str(failure.value).startswith(f"{MODEL}: ") and "'xxx'" in str(failure.value)
    assert item.runner.pid is None and not item.runner.socket_path.exists()
    assert item.exits == []


async def test_a_worker_that_exits_while_loading_fails_the_start_with_its_exit_and_last_line(socket_dir):
    # An "interpreter" that says one line on stderr and exits 4, whatever it is asked to run.
    fake_python = socket_dir.parent / "fake-python"
    fake_python.write_text("#!/bin/sh\necho 'no such module: ocrd.worker' >&2\nexit 4\n")
    fake_python.chmod(0o755)
    item = Started(socket_dir, TESSERACT, python=str(fake_python))
    with pytest.raises(ModelLoadFailed) as failure:
        await item.start()
    assert str(failure.value) == (
        f"runner of {MODEL} exited while loading (exit status 4): no such module: ocrd.worker")
    assert item.runner.pid is None
