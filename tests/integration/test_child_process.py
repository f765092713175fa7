"""``ocrd.runners.lifecycle.ChildProcess``, the one subprocess lifecycle of both process runners,
with real processes: small Python programs that print lines, exit with a code, start a helper in
their process group, ignore SIGTERM. Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ocrd.runners.lifecycle import STREAM_LIMIT_NOTE, ChildProcess, group_members, rss_bytes
from ocrd.runners.logs import LogBuffer

HANG_GUARD = 30.0
LOGGER = "ocrd.runner.test-child"

# A helper in the program's group that keeps its output pipe open until it is signalled
# (argv[1] == "ignore": it ignores SIGTERM too).
HELPER = textwrap.dedent("""
    import signal, subprocess, sys, time
    def start_helper(ignore_term=False):
        code = ("import signal, time\\n"
                + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore_term else "")
                + "time.sleep(600)\\n")
        helper = subprocess.Popen([sys.executable, "-c", code])
        print(f"helper {helper.pid}", flush=True)
        return helper
""")


def program(body: str) -> list[str]:
    return [sys.executable, "-c", HELPER + textwrap.dedent(body)]


class Reports:
    """What ``watch`` reported: return codes, and the one-line reason made of each."""

    def __init__(self, child: ChildProcess):
        self.child = child
        self.codes: list[int] = []
        self.reasons: list[str] = []
        self.done = asyncio.Event()

    async def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.reasons.append(await self.child.exit_report("the program", "exited"))
        self.done.set()


@pytest_asyncio.fixture
async def made() -> AsyncIterator[list[ChildProcess]]:
    """Children made by a test; each is stopped afterwards, so nothing outlives it."""
    children: list[ChildProcess] = []
    yield children
    for child in children:
        await child.stop(0)


def make(made: list[ChildProcess], **kwargs) -> tuple[ChildProcess, LogBuffer]:
    buffer = LogBuffer()
    child = ChildProcess("test program", logging.getLogger(LOGGER), buffer, **kwargs)
    made.append(child)
    return child, buffer


async def line_in(buffer: LogBuffer, text: str) -> str:
    """The first log line that contains ``text``, once it has come."""
    async def first() -> str:
        async for line in buffer.follow(1000):
            if text in line:
                return line
        raise AssertionError(f"the log ended without {text!r}: {buffer.tail(20)}")

    return await asyncio.wait_for(first(), HANG_GUARD)


def helper_pid(line: str) -> int:
    return int(line.split()[-1])


# --- output -------------------------------------------------------------------------------------


async def test_stderr_lines_reach_the_buffer_the_journal_at_their_level_and_the_line_hook(made, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    seen: list[str] = []
    child, buffer = make(made, on_line=seen.append,
                         journal_level=lambda line: logging.DEBUG if "access" in line else logging.INFO)
    await child.spawn(program("""
        print('{"event": "ready"}', flush=True)
        print("loading the model", file=sys.stderr, flush=True)
        print("", file=sys.stderr, flush=True)
        print("GET /health access 200", file=sys.stderr, flush=True)
    """), os.environ, merge_output=False)
    assert await asyncio.wait_for(child.events.readline(), HANG_GUARD) == b'{"event": "ready"}\n'
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 0
    await child.output_drained()
    # stdout is the runner's own channel: never in the log. Empty lines are left out.
    assert buffer.tail(10) == seen == ["loading the model", "GET /health access 200"]
    journal = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert journal == [(logging.INFO, "loading the model"), (logging.DEBUG, "GET /health access 200")]
    assert buffer.closed  # the log ended with the program: `ocrctl logs -f` ends too


async def test_merged_output_keeps_stdout_and_stderr_lines_in_their_order(made):
    child, buffer = make(made)
    await child.spawn(program("""
        print("one on stdout", flush=True)
        print("two on stderr", file=sys.stderr, flush=True)
        print("three on stdout", flush=True)
    """), os.environ, merge_output=True)
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 0
    await child.output_drained()
    assert buffer.tail(10) == ["one on stdout", "two on stderr", "three on stdout"]


async def test_a_line_past_the_stream_limit_is_noted_and_the_log_goes_on(made):
    child, buffer = make(made)
    await child.spawn(program("""
        print("x" * 200_000, flush=True)
        print("after the long line", flush=True)
    """), os.environ, merge_output=True)
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 0
    await child.output_drained()
    lines = buffer.tail(1000)
    assert STREAM_LIMIT_NOTE in lines and lines[-1] == "after the long line"


async def test_the_program_runs_with_exactly_the_environment_given(made):
    child, buffer = make(made)
    await child.spawn(program("""
        import os
        print(sorted(k for k in os.environ if k.startswith("OCRD_TEST_")), flush=True)
    """), {"PATH": os.environ["PATH"], "OCRD_TEST_ONE": "1"}, merge_output=True)
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 0
    await child.output_drained()
    assert buffer.tail(1) == ["['OCRD_TEST_ONE']"]


async def test_a_program_that_cannot_be_run_raises_oserror(made):
    child, _ = make(made)
    with pytest.raises(FileNotFoundError):
        await child.spawn(["/nonexistent/program"], os.environ, merge_output=True)
    assert child.pid is None


# --- exit ---------------------------------------------------------------------------------------


async def test_the_exit_is_noticed_while_a_helper_still_holds_the_output_open(made):
    child, buffer = make(made)
    await child.spawn(program("""
        start_helper()
        sys.exit(3)
    """), os.environ, merge_output=True)
    helper = helper_pid(await line_in(buffer, "helper"))
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 3
    assert child.pid is None and child.returncode == 3
    assert child.members() == [helper]  # the helper lives on in the group, and the log is open
    assert not buffer.closed


async def test_an_unexpected_exit_ends_the_group_and_is_reported_once_with_the_reason_and_last_line(made):
    child, buffer = make(made)
    reports = Reports(child)
    await child.spawn(program("""
        start_helper()
        print("my last words", flush=True)
        time.sleep(600)
    """), os.environ, merge_output=True)
    await line_in(buffer, "my last words")
    child.watch(reports)
    pid = child.pid
    assert pid is not None and len(child.members()) == 2
    os.kill(pid, signal.SIGKILL)  # the program only: its helper must go too
    await asyncio.wait_for(reports.done.wait(), HANG_GUARD)
    assert reports.codes == [-signal.SIGKILL]
    assert reports.reasons == ["the program exited (killed by SIGKILL): my last words"]
    assert group_members(pid) == [] and child.pid is None
    assert buffer.closed
    await asyncio.sleep(0.5)
    assert len(reports.codes) == 1


async def test_an_exit_with_a_status_is_reported_with_it(made):
    child, _ = make(made)
    reports = Reports(child)
    await child.spawn(program("""
        print("cannot go on", file=sys.stderr, flush=True)
        time.sleep(0.3)
        sys.exit(5)
    """), os.environ, merge_output=False)
    child.watch(reports)
    await asyncio.wait_for(reports.done.wait(), HANG_GUARD)
    assert reports.reasons == ["the program exited (exit status 5): cannot go on"]


async def test_a_program_that_ends_at_once_is_noticed(made):
    child, _ = make(made)
    await child.spawn([sys.executable, "-c", "pass"], os.environ, merge_output=True)
    assert await asyncio.wait_for(child.exited, HANG_GUARD) == 0


# --- stop ---------------------------------------------------------------------------------------


async def test_stop_asks_with_sigterm_and_a_stopped_program_is_no_crash(made, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    child, buffer = make(made)
    reports = Reports(child)
    await child.spawn(program("""
        def leave(*_):
            print("SIGTERM: leaving", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, leave)
        helper = start_helper()
        time.sleep(600)
    """), os.environ, merge_output=True)
    await line_in(buffer, "helper")
    child.watch(reports)
    pgid = child.pid
    assert pgid is not None
    await asyncio.wait_for(child.stop(HANG_GUARD), HANG_GUARD * 2)
    assert child.returncode == 0 and "SIGTERM: leaving" in buffer.tail(10)
    assert group_members(pgid) == []  # the helper got the SIGTERM too
    assert buffer.closed
    await asyncio.sleep(0.3)
    assert reports.codes == []
    assert not [r for r in caplog.records if r.name == LOGGER]  # nothing to warn about


async def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(made, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    child, buffer = make(made)
    await child.spawn(program("""
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
        start_helper(ignore_term=True)
        while True:
            time.sleep(600)
    """), os.environ, merge_output=True)
    await line_in(buffer, "helper")
    pgid = child.pid
    assert pgid is not None
    await asyncio.wait_for(child.stop(0.5), HANG_GUARD)
    assert "SIGTERM ignored" in buffer.tail(10)
    assert child.returncode == -signal.SIGKILL
    assert group_members(pgid) == []
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "test program did not stop within 0s; killing it"]


async def test_stop_without_grace_kills_at_once_without_asking(made):
    child, buffer = make(made)
    await child.spawn(program("""
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM seen", flush=True))
        print("up", flush=True)
        time.sleep(600)
    """), os.environ, merge_output=True)
    await line_in(buffer, "up")
    await asyncio.wait_for(child.stop(0), HANG_GUARD)
    assert child.returncode == -signal.SIGKILL
    assert "SIGTERM seen" not in buffer.tail(10)


async def test_stop_after_the_program_ended_still_ends_its_helpers(made):
    child, buffer = make(made)
    await child.spawn(program("""
        start_helper()
        sys.exit(0)
    """), os.environ, merge_output=True)
    helper = helper_pid(await line_in(buffer, "helper"))
    await asyncio.wait_for(child.exited, HANG_GUARD)
    assert child.members() == [helper]
    await asyncio.wait_for(child.stop(HANG_GUARD), HANG_GUARD * 2)
    assert child.members() == []
    await child.stop(0)  # again: nothing left to do


# --- memory and groups --------------------------------------------------------------------------


async def test_group_memory_counts_the_helpers_too(made):
    child, buffer = make(made)
    await child.spawn(program("""
        start_helper()
        time.sleep(600)
    """), os.environ, merge_output=True)
    helper = helper_pid(await line_in(buffer, "helper"))
    assert child.pid is not None
    assert rss_bytes(helper) > 0 and child.group_rss_bytes() > rss_bytes(child.pid) > 0
    await child.stop(0)
    assert child.group_rss_bytes() == 0


def test_group_members_lists_a_new_group_and_its_children_but_no_one_else():
    # A real process group: a leader that starts a child, both sleeping.
    leader = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "print('ok', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert leader.stdout is not None and leader.stdout.readline() == b"ok\n"
        members = group_members(leader.pid)
        assert leader.pid in members and len(members) == 2
        assert os.getpid() not in members
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
