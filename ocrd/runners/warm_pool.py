"""Warm runners: worker processes with their engine imported, waiting for the next model.

Starting a runner for a small model is mostly starting Python and importing torch and
transformers (seconds); the model itself may load in a tenth of that. ``WarmPool`` keeps
``scheduler.warm_runners`` processes per engine started ahead (``python -m ocrd.worker --warm``,
``ocrd.worker.warm``) and gives one to the next ``ProcessRunner`` of that engine, which hands it
the model on its stdin; a replacement starts at once, in the background.

A warm runner is only of use to a runner that would have been started exactly like it: the same
interpreter, the same environment (the Hub's settings, ``CUDA_VISIBLE_DEVICES``: on a GPU its CUDA
context is already made on that device) and the same planned device: that is its ``WarmKey``. A
load that finds none of its key starts cold, and the pool warms the next one for that key
instead (the last load is the best guess of the next), ending an idle one of another key when
that would exceed the count.

The pool's processes are the daemon's children like any runner: they die with it
(PR_SET_PDEATHSIG), are ended at shutdown, and show in ``ocrctl ps`` (``WarmRunnerInfo``) with
their memory, which the planner counts (``ocrd.planning.host_view``). One that fails to warm is
logged and not retried until a load asks for its key again: a broken engine costs one attempt
per load, never a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ocrd.runners.base import RunnerSpec, WarmRunnerInfo
from ocrd.runners.lifecycle import ChildProcess, read_lines, rss_bytes
from ocrd.runners.logs import LogBuffer

log = logging.getLogger("ocrd.runner.warm")

WARM_ENGINES = ("builtin", "transformers")  # the engines whose runners are ocrd.worker processes
STOP_GRACE = 2.0  # an idle warm runner has nothing to finish
# Blanks at the end of a warm runner's command line: the room its new title takes once it is
# handed a model (a process title can only reuse the memory its arguments came in).
TITLE_ROOM = 256


@dataclass(frozen=True)
class WarmKey:
    """What a runner must share with a warm one to take it over (see the module's docstring)."""

    engine: str
    python: str
    device: str  # the planned device, as the planner names it ("cpu", "cuda:1")
    env: tuple[tuple[str, str], ...]  # the runner's own environment (RunnerSpec.env), sorted

    @classmethod
    def of(cls, spec: RunnerSpec) -> WarmKey:
        return cls(spec.engine, spec.python or sys.executable, spec.device, tuple(sorted(spec.env.items())))


class WarmProcess:
    """One warm runner: started, then warm (or failed), then taken by a ``ProcessRunner``."""

    def __init__(self, key: WarmKey, socket_dir: str, base_env: Mapping[str, str]):
        self.key = key
        self.log_buffer = LogBuffer()
        self.child = ChildProcess("warm runner", log.getChild(key.engine), self.log_buffer,
                                  journal_level=lambda line: logging.DEBUG)
        self.taken = False
        self._socket_dir = socket_dir
        # SPT_NOENV: when handed a model, the runner retitles itself (``ocrd.worker.warm``) within
        # its command line's room only, leaving /proc/PID/environ (OCRD_PARENT_PID) readable.
        self._env = {**base_env, **dict(key.env), "OCRD_PARENT_PID": str(os.getpid()),
                     "SPT_NOENV": "1"}
        self._warm: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._spawned = False
        self.failure = ""

    async def start(self) -> None:
        if self._warm.done():  # stopped before it started
            return
        command = [self.key.python, "-m", "ocrd.worker", "--warm", "--engine", self.key.engine,
                   "--socket-dir", self._socket_dir, f"--title-room={' ' * TITLE_ROOM}"]
        try:
            await self.child.spawn(command, self._env, merge_output=False, stdin=True)
        except OSError as exc:
            self._settle(False, f"cannot start {self.key.python}: {exc.strerror or exc}")
            return
        self._spawned = True
        if self._warm.done():  # stopped while it was being started: nothing may stay behind
            await self.child.stop(0)
            return
        self.child.track(self._await_warm())

    async def wait_warm(self) -> bool:
        """True once it is warm; False if it failed to warm or ended (``failure`` says why)."""
        return await asyncio.shield(self._warm)

    @property
    def alive(self) -> bool:
        """Warming or warm: not failed, not stopped, not ended (or not spawned yet)."""
        failed = self._warm.done() and not self._warm.result()
        return not failed and (not self._spawned or self.child.pid is not None)

    def info(self) -> WarmRunnerInfo:
        pid = self.child.pid or 0
        return WarmRunnerInfo(engine=self.key.engine, device=self.key.device, pid=pid,
                              memory_bytes=rss_bytes(pid) if pid else 0,
                              ready=self._warm.done() and self._warm.result())

    async def stop(self) -> None:
        self._settle(False, "stopped")  # first: a start under way sees it and ends what it made
        await self.child.stop(STOP_GRACE)

    async def _await_warm(self) -> None:
        """Its first event: ``warm``, ``error`` (with why), or the end of its output."""
        async with contextlib.aclosing(read_lines(self.child.events)) as lines:
            async for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == "warm":
                    self._settle(True)
                    break
                if isinstance(event, dict) and event.get("event") == "error":
                    self._settle(False, str(event.get("message", "")))
                    break
        if not self._warm.done():
            self._settle(False, await self.child.exit_report("warm runner", "exited"))
        if not self._warm.result():
            log.warning("no warm %s runner: %s", self.key.engine, self.failure)
            await self.child.stop(0)
            return
        if not self.taken:
            code = await asyncio.shield(self.child.exited)
            if not self.taken:
                self._settle(False, "exited")
                log.warning("an idle warm %s runner exited (code %s); the next load starts cold",
                            self.key.engine, code)

    def _settle(self, warm: bool, failure: str = "") -> None:
        if not self._warm.done():
            self._warm.set_result(warm)
            self.failure = failure
        elif not warm:
            self.failure = self.failure or failure


class WarmPool:
    """``count()`` warm runners per engine (``scheduler.warm_runners``, read at each use)."""

    def __init__(self, socket_dir: str, base_env: Callable[[], Mapping[str, str]], count: Callable[[], int]):
        self._socket_dir = socket_dir
        self._base_env = base_env
        self._count = count
        self._idle: list[WarmProcess] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def prime(self, keys: list[WarmKey]) -> None:
        """At start: warm runners for the keys loads will most likely have."""
        for key in keys:
            self._refill(key)

    def take(self, spec: RunnerSpec) -> WarmProcess | None:
        """An idle warm runner for a runner of ``spec`` (one still warming too: waiting for it
        is still shorter than a cold start), and a replacement starting; None if there is none
        of its key (the next one is warmed for it)."""
        if spec.engine not in WARM_ENGINES or self._closed or self._count() <= 0:
            return None
        key = WarmKey.of(spec)
        found = next((p for p in self._idle if p.key == key and p.alive), None)
        if found is not None:
            self._idle.remove(found)
            found.taken = True
        self._refill(key)
        return found

    def infos(self) -> list[WarmRunnerInfo]:
        return [process.info() for process in self._idle if process.alive]

    def resize(self) -> None:
        """After a reload: ends what is over the new count (0 ends them all)."""
        for engine in WARM_ENGINES:
            self._trim(engine)

    async def close(self) -> None:
        """Ends every idle warm runner (at shutdown); starts under way end what they made."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(process.stop() for process in idle), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refill(self, key: WarmKey) -> None:
        """Starts one of ``key`` unless that many are idle already; then trims the engine's."""
        if self._closed or self._count() <= 0:
            return
        self._idle = [p for p in self._idle if p.alive]
        if sum(1 for p in self._idle if p.key == key) >= self._count():
            return
        process = WarmProcess(key, self._socket_dir, self._base_env())
        self._idle.append(process)  # newest last: trimming ends the oldest of other keys first
        self._trim(key.engine, keep=key)
        task = asyncio.create_task(process.start())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _trim(self, engine: str, keep: WarmKey | None = None) -> None:
        mine = [p for p in self._idle if p.key.engine == engine]
        excess = len(mine) - max(0, self._count())
        for process in [p for p in mine if p.key != keep] + [p for p in mine if p.key == keep]:
            if excess <= 0:
                break
            self._idle.remove(process)
            excess -= 1
            task = asyncio.create_task(process.stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
