"""One runner subprocess, from its start to the end of the last process of its group.

Both process runners (``ocrd.runners.process.ProcessRunner``, the worker; and
``ocrd.runners.vllm.process.VllmProcessRunner``) run their program through a ``ChildProcess``,
which owns what they have in common:

* **spawn**: the command with the given environment, stdin from /dev/null, in a session (and so a
  process group) of its own, led by the program: its helpers (tesseract, vLLM's engine core) join
  that group, and the group is what ends. The log is the program's stderr (its stdout then stays
  the runner's own channel, ``events``) or both streams merged, which keeps their order.
* **log pump**: every non-empty log line goes into the runner's ``LogBuffer`` (`ocrctl logs`) and
  to the daemon's log at the level ``journal_level`` picks, and to ``on_line`` (load progress);
  the buffer is closed when the log ends, which ends `ocrctl logs -f`. An over-long line (past
  asyncio's 64 KiB stream limit) is left out with a note instead of stopping the pump, which
  would leave the program blocked on a full pipe.
* **exit watch**: ``exited`` resolves with the return code as soon as the program ends: a pidfd
  says when, not ``Process.wait()``, which also waits for the output pipes to close, and a helper
  of the group (vLLM's engine core) may hold them open after the program died. After a
  successful start, ``watch(report)`` acts once on an exit nobody asked for: it logs it, ends the
  rest of the group, lets the pump read the last lines, and then awaits ``report(code)``, where
  the runner words its reason (``exit_report`` gives the usual one-liner) for the scheduler.
* **group end**: ``stop(grace)`` sends SIGTERM to the whole group, waits up to ``grace`` seconds
  for none of it to be left (no SIGTERM when ``grace <= 0``), then SIGKILLs the group and waits
  for that; then the pump drains (bounded: a process that left the group may hold the pipe) and
  the helper tasks are cancelled. A stop makes a later exit no crash.

Also here: ``describe_returncode`` and the memory helpers (resident memory of a process, of a
whole group), as /proc shows them. Everything runs on the daemon's event loop, and nothing uses
``preexec_fn`` (``ocrd.runners.parent_death`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from ocrd.runners.logs import LogBuffer

GONE_POLL = 0.1  # while waiting for the group's last processes to end
REAP_POLL = 0.01  # between the pidfd saying "ended" and asyncio's child watcher reaping it
DRAIN_SECONDS = 2.0  # the pump's time to read an ended program's last words
STREAM_LIMIT_NOTE = "[ocrd: a line longer than 64 KiB was left out]"

JournalLevel = Callable[[str], int]
LineHook = Callable[[str], None]
ExitReport = Callable[[int], Awaitable[None]]


class ChildProcess:
    """One runner's program and its process group (see the module's docstring).

    ``name`` names the program in the daemon's log ("runner", "vLLM server"); ``log`` is the
    runner's logger, ``log_buffer`` its `ocrctl logs` buffer.
    """

    def __init__(self, name: str, log: logging.Logger, log_buffer: LogBuffer, *,
                 journal_level: JournalLevel | None = None, on_line: LineHook | None = None):
        self._name = name
        self._log = log
        self._log_buffer = log_buffer
        self._journal_level = journal_level or (lambda line: logging.INFO)
        self._on_line = on_line
        self._process: asyncio.subprocess.Process | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False

    # --- spawn ---------------------------------------------------------------------------------

    async def spawn(self, command: Sequence[str], env: Mapping[str, str], *, merge_output: bool,
                    stdin: bool = False) -> None:
        """Starts ``command`` in a new session with exactly ``env``, the log pump and the exit
        watch. ``merge_output``: the log is stdout and stderr together; otherwise it is stderr
        and stdout is ``events``. ``stdin``: a pipe for ``send`` (a warm runner's assignment),
        else /dev/null. Raises ``OSError`` when the program cannot be run."""
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        process = self._process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_output else asyncio.subprocess.PIPE,
            start_new_session=True,
            env=dict(env),
        )
        # At once, before any await: the sooner the pidfd, the smaller the chance that the program
        # has already ended and been reaped.
        pidfd = _pidfd_of(process.pid)
        log_stream = process.stdout if merge_output else process.stderr
        assert log_stream is not None
        self._pump = self.track(self._pump_log(log_stream))
        self.track(self._wait_exit(pidfd))

    async def send(self, line: str) -> None:
        """Writes ``line`` to the program's stdin (spawned with ``stdin=True``) and closes it:
        one message is all a runner is ever sent. ``OSError`` if it has ended meanwhile."""
        assert self._process is not None and self._process.stdin is not None, "spawn(stdin=True) first"
        pipe = self._process.stdin
        try:
            pipe.write(line.encode() + b"\n")
            await pipe.drain()
        finally:
            pipe.close()

    def adopt(self, name: str, log: logging.Logger, journal_level: JournalLevel | None = None) -> None:
        """From now on the program is ``name`` and logs as ``log`` (a warm runner that became
        a model's runner)."""
        self._name = name
        self._log = log
        if journal_level is not None:
            self._journal_level = journal_level

    def track(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs ``coro`` as a task of this process: cancelled when it ends (stop or crash)."""
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        return task

    # --- what it is ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The program's pid while it runs (not yet reaped); None before and after."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with the return code once the program has ended (not its helpers)."""
        assert self._exited is not None, "spawn() first"
        return self._exited

    @property
    def events(self) -> asyncio.StreamReader:
        """The program's stdout, when it is not part of the log."""
        assert self._process is not None and self._process.stdout is not None
        assert self._process.stderr is not None, "spawned with merge_output: stdout is the log"
        return self._process.stdout

    def members(self) -> list[int]:
        """Live processes of the program's group (its helpers too, even after it ended)."""
        return group_members(self._process.pid) if self._process is not None else []

    def group_rss_bytes(self) -> int:
        """Resident memory of the whole group while the program runs; 0 otherwise."""
        return sum(rss_bytes(member) for member in self.members()) if self.pid else 0

    # --- its end -------------------------------------------------------------------------------

    def watch(self, report: ExitReport) -> None:
        """From now on, an exit without ``stop()`` ends the group and awaits ``report(code)``
        once (see the module's docstring)."""
        self.track(self._watch(report))

    async def stop(self, grace: float) -> None:
        """Ends the whole group: SIGTERM and up to ``grace`` seconds, then SIGKILL; returns once
        none of it is left and its output has been read; the tasks end too. Idempotent."""
        self._stopping = True
        await self._end_group(grace)
        self._cancel_tasks()

    async def output_drained(self) -> None:
        """Lets the pump read the program's last words (bounded by ``DRAIN_SECONDS``)."""
        if self._pump is not None and not self._pump.done():
            await asyncio.wait([self._pump], timeout=DRAIN_SECONDS)

    async def exit_report(self, subject: str, what: str) -> str:
        """``"<subject> <what> (<how it ended>): <its last log line>"``, once it has ended."""
        code = await asyncio.shield(self.exited)
        await self.output_drained()
        last = self._log_buffer.tail(1)
        return f"{subject} {what} ({describe_returncode(code)})" + (f": {last[0]}" if last else "")

    # --- internals -----------------------------------------------------------------------------

    async def _pump_log(self, stream: asyncio.StreamReader) -> None:
        try:
            async for line in read_lines(stream):
                if not line:
                    continue
                self._log_buffer.append(line)
                self._log.log(self._journal_level(line), "%s", line)
                if self._on_line is not None:
                    self._on_line(line)
        finally:
            self._log_buffer.close()  # the log ended (or we stopped reading it): `logs -f` ends too

    async def _wait_exit(self, pidfd: int | None) -> None:
        """Resolves ``exited`` when the program ends (the pidfd turns readable then)."""
        process = self._process
        assert process is not None and self._exited is not None
        poll = REAP_POLL
        if pidfd is None:
            poll = GONE_POLL  # no pidfd to be had: asking often enough is all there is
        else:
            loop = asyncio.get_running_loop()
            ended = loop.create_future()
            loop.add_reader(pidfd, _resolve, ended, None)
            try:
                await ended
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        while (code := process.returncode) is None:  # asyncio's child watcher reaps it soon
            await asyncio.sleep(poll)
        _resolve(self._exited, code)

    async def _watch(self, report: ExitReport) -> None:
        code = await asyncio.shield(self.exited)
        if self._stopping:
            return
        self._log.error("%s exited unexpectedly (%s)", self._name, describe_returncode(code))
        # Its helpers may outlive it: the whole group goes, nothing stays behind (and the pump
        # reads the last lines meanwhile).
        await self._end_group(0)
        self._cancel_tasks()
        await report(code)

    async def _end_group(self, grace: float) -> None:
        process = self._process
        if process is None:
            return
        pgid = process.pid  # it leads its own group (start_new_session)
        if grace > 0 and not self._gone():
            signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._group_gone(), timeout=grace)
        if not self._gone():
            if grace > 0:
                self._log.warning("%s did not stop within %.0fs; killing it", self._name, grace)
            signal_group(pgid, signal.SIGKILL)
            await self._group_gone()
        # The pump ends by itself with the group (its pipe closes) after the last lines.
        await self.output_drained()

    def _gone(self) -> bool:
        """The program has been reaped and no process of its group is left."""
        return self.returncode is not None and not self.members()

    async def _group_gone(self) -> None:
        while not self._gone():
            if self._exited is not None and not self._exited.done():
                await asyncio.wait([self._exited], timeout=GONE_POLL)  # its end wakes us at once
            else:
                await asyncio.sleep(GONE_POLL)  # helpers left: /proc is all there is to ask

    def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


# --- lines, processes, groups --------------------------------------------------------------------


async def read_lines(stream: asyncio.StreamReader) -> AsyncGenerator[str, None]:
    """The stream's lines, decoded, without their line ends, until it ends. A line past the
    stream's limit comes as ``STREAM_LIMIT_NOTE`` (and the rest of it as a line of its own)."""
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # asyncio dropped the over-long part; reading goes on after it
            yield STREAM_LIMIT_NOTE
            continue
        if not raw:
            return
        yield raw.decode(errors="replace").rstrip()


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process from /proc (Linux); 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pidfd_of(pid: int) -> int | None:
    """A pidfd of ``pid`` (readable once it ends); None when it has already been reaped (or the
    kernel has no pidfds for us)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
