"""FakeRunner: the test double for a runner process, behind the real ``Runner`` interface.

Unit tests drive the real ``Scheduler`` with it (the way Ollama's ``sched_test.go`` drives its
scheduler with a fake llama server). Each runner follows a ``StartPlan`` that the test chooses per
model: a start that finishes at once, one that waits until the test releases it, one that reports
progress steps, one that fails, one that never finishes (for load_timeout). ``crash()`` plays a
process that dies on its own: it calls the ``on_exit`` callback, once, as the real runners do.

Given a ``FakeNvml`` (``FakeRunnerFactory(gpus=...)``), a runner started on ``cuda:N`` shows up in
NVML as a real one would: a compute process on device N holding its plan's ``memory_bytes``, gone
again once it stops or crashes. So the scheduler's memory accounting and eviction see the GPU a
real host would show them.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx

from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec


@dataclass(frozen=True)
class StartPlan:
    """How the next runners of one model behave in ``start()``."""

    gated: bool = False  # start() returns only after the test calls runner.release()
    progress: tuple[LoadProgress, ...] = ()  # reported in order, before the gate
    error: BaseException | None = None  # raised by start() (after progress and gate)
    hang: bool = False  # start() never returns: only a cancellation ends it
    memory_bytes: int = 0


# eq=False: the scheduler tells runners apart by identity, as it would processes.
@dataclass(eq=False)
class FakeRunner(Runner):
    spec: RunnerSpec
    plan: StartPlan
    fake_pid: int
    running: bool = False
    start_entered: asyncio.Event = field(default_factory=asyncio.Event)
    # Grace of every stop() call, in order: tests check "stopped, and how".
    stops: list[float] = field(default_factory=list)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _on_exit: ExitCallback | None = None
    _exited: bool = False
    gpus: Any = None  # a FakeNvml whose devices show this runner's memory while it runs

    @property
    def pid(self) -> int | None:
        return self.fake_pid if self.running else None

    @property
    def memory_bytes(self) -> int:
        return self.plan.memory_bytes if self.running else 0

    @property
    def stopped(self) -> bool:
        return bool(self.stops)

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        self.start_entered.set()
        for step in self.plan.progress:
            progress(step)
            await asyncio.sleep(0)  # like a real runner: steps arrive one loop turn apart
        if self.plan.hang:
            await asyncio.get_running_loop().create_future()
        if self.plan.gated:
            await self._gate.wait()
        if self.plan.error is not None:
            raise self.plan.error
        self._on_exit = on_exit
        self.running = True
        self._show_on_gpu(True)

    def _show_on_gpu(self, running: bool) -> None:
        if self.gpus is None or not self.spec.device.startswith("cuda"):
            return
        device = self.gpus.devices[int(self.spec.device.split(":")[1])]
        if running:
            device.processes.append((self.fake_pid, self.plan.memory_bytes))
            device.used += self.plan.memory_bytes
        elif (self.fake_pid, self.plan.memory_bytes) in device.processes:
            device.processes.remove((self.fake_pid, self.plan.memory_bytes))
            device.used -= self.plan.memory_bytes

    def release(self) -> None:
        """Lets a gated start() finish (successfully, or with the plan's error)."""
        self._gate.set()

    def crash(self, reason: str = "killed by signal 9") -> None:
        """The process dies on its own: on_exit is called once, as a real runner's watcher would."""
        assert self.running, "only a started runner can crash"
        self.running = False
        self._show_on_gpu(False)
        if self._on_exit is not None and not self._exited:
            self._exited = True
            self._on_exit(reason)

    async def stop(self, grace: float) -> None:
        self.stops.append(grace)
        if self.running:
            self._show_on_gpu(False)
        self.running = False
        self._exited = True  # a stopped runner does not report its exit

    def client(self) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"model": self.model_id, "path": request.url.path})

        transport = httpx.MockTransport(answer)
        return httpx.AsyncClient(base_url="http://fake-runner", transport=transport)


class FakeRunnerFactory:
    """A ``RunnerFactory`` that records every runner it makes, in order."""

    def __init__(self, gpus: Any = None) -> None:
        self.gpus = gpus  # a FakeNvml: runners on a GPU show up in it (see the module doc)
        self.runners: list[FakeRunner] = []
        self._plans: dict[str, StartPlan] = {}
        self._pids = itertools.count(4000)
        self._made = asyncio.Event()

    def plan(self, model_id: str, **behaviour: object) -> None:
        """Sets how runners of ``model_id`` made from now on start (see StartPlan)."""
        self._plans[model_id] = StartPlan(**behaviour)  # type: ignore[arg-type]

    def __call__(self, spec: RunnerSpec) -> FakeRunner:
        plan = self._plans.get(spec.model.id, StartPlan())
        runner = FakeRunner(spec=spec, plan=plan, fake_pid=next(self._pids), gpus=self.gpus)
        self.runners.append(runner)
        self._made.set()
        return runner

    def made(self, model_id: str) -> list[FakeRunner]:
        return [runner for runner in self.runners if runner.model_id == model_id]

    async def wait_started(self, model_id: str, count: int = 1) -> FakeRunner:
        """The ``count``-th runner of ``model_id`` once its start() has begun."""
        while len(self.made(model_id)) < count:
            self._made.clear()
            await self._made.wait()
        runner = self.made(model_id)[count - 1]
        await runner.start_entered.wait()
        return runner
