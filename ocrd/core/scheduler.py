"""The scheduler: the one owner of model state (after Ollama's ``server/sched.go``).

A *slot* per known model holds its state (not loaded / loading / ready / unloading / failed), its
runner, its lease count and its bounded queue. Requests take a *lease* with
``async with scheduler.acquire(model) as runner`` and a leased model is never unloaded or
evicted. Nothing else mutates model state; transports call in here and every transition is
published on the event bus.

Concurrency model: everything runs on the daemon's one event loop. Each slot has its own wake-up
signal and load future, so a load (which can take minutes) only blocks requests for that model.
Loads and unloads run in tasks of their own: a caller that goes away (a closed HTTP connection, a
cancelled gRPC stream) never leaves a slot half loaded or half unloaded. Timeouts (load, drain)
are event-loop time; the injected ``clock`` only measures idleness for keep-alive.

Every load is made from the planner's decision of that moment (``ocrd.planning.planner``: engine, device,
quantization), which ``explain`` also returns. The GPU snapshot comes from the injected
``gpu_probe`` (NVML; tests pass a FakeNvml one) and is taken off the event loop, as are the reads
of safetensors headers. A load that does not fit evicts idle, unpinned models by their measured
memory (NVML per process on a GPU, the runner's own figure otherwise), least recently used first,
and fails with InsufficientMemory when that is not enough (``ocrd.core.placement``).

Runners a previous daemon left running (vLLM containers) are taken over with ``adopt``: the model
is ready without a load. A runner that crashes while serving leaves its slot FAILED with its
reason; where the engine's settings allow restarts (``vllm.restart_attempts``), the scheduler
loads it again after a backoff that doubles with each restart in a row (``ocrd.core.restarts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings, model_overrides
from ocrd.core.directory import ModelDirectory
from ocrd.core.placement import Placement
from ocrd.core.restarts import RestartBackoff
from ocrd.core.slots import Slot, SlotInfo, UnloadResult, drain, is_idle
from ocrd.errors import (
    Conflict,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    OcrdError,
    QueueFull,
    ShuttingDown,
)
from ocrd.events import Event, EventBus, ModelState
from ocrd.planning.gpu import GpuProbe
from ocrd.planning.planner import Decision, gib, summary, with_reason_first
from ocrd.runners.base import LoadProgress, Runner, RunnerFactory

log = logging.getLogger("ocrd.core.scheduler")

Clock = Callable[[], float]

# Requests passed to an upstream server at once unless its model says otherwise: such servers
# (vLLM, hosted APIs) batch, and their own limits answer 429s that pass through.
UPSTREAM_CONCURRENCY = 64

__all__ = ["Scheduler", "SlotInfo", "UnloadResult"]


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | ModelDirectory,
        runner_factory: RunnerFactory,
        events: EventBus | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        gpu_probe: GpuProbe | None = None,
    ):
        self._settings = settings
        # A bare catalog (tests) is served as it is; the daemon passes the host's directory.
        self._models = catalog if isinstance(catalog, ModelDirectory) else ModelDirectory(catalog, settings)
        self._factory = runner_factory
        self._gpu = gpu_probe if gpu_probe is not None else GpuProbe()  # NVML; tests: FakeNvml
        self.events = events or EventBus()
        self._clock = clock
        self._wall = wall_clock
        self._slots: dict[str, Slot] = {}
        self._room = asyncio.Lock()
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._starting: dict[str, Runner] = {}  # runners being started, by model id
        self._restarts = RestartBackoff(clock)
        self._placement = Placement(self._models, self._gpu, self._slots, lambda: self._settings,
                                    self._unload_slot)

    # --- lookup and snapshots ------------------------------------------------------------------

    @property
    def directory(self) -> ModelDirectory:
        return self._models

    @property
    def settings(self) -> Settings:
        return self._settings

    def live_runners(self) -> list[Runner]:
        """Every runner this scheduler started (or adopted) and has not stopped: ready ones and
        ones still starting (e.g. what ``ocrctl cleanup`` must not take for orphans)."""
        ready = [slot.runner for slot in self._slots.values() if slot.runner is not None]
        return ready + [r for r in self._starting.values() if all(r is not o for o in ready)]

    def resolve(self, name: str) -> CatalogEntry:
        return self._models.resolve(name)

    def models(self) -> list[SlotInfo]:
        """Every model this host can serve, in catalog order, whatever its state."""
        return [self._info(self._slot_for(entry)) for entry in self._models.available()]

    def info(self, name: str) -> SlotInfo:
        return self._info(self._slot(name))

    def _slot(self, name: str) -> Slot:
        return self._slot_for(self._models.resolve(name))

    def _slot_for(self, entry: CatalogEntry) -> Slot:
        slot = self._slots.get(entry.id)
        if slot is None:
            slot = Slot(entry=entry, engine=self._models.engine_for(entry))
            self._configure(slot)
            self._slots[entry.id] = slot
        elif slot.entry != entry and slot.state in (ModelState.NOT_LOADED, ModelState.FAILED):
            # The directory changed (SIGHUP added or removed an [[upstreams]] entry): a model
            # that is not loaded is served as the directory says now.
            slot.entry = entry
            slot.engine = self._models.engine_for(entry)
            self._configure(slot)
        return slot

    def _configure(self, slot: Slot) -> None:
        """Applies the settings (and load-time overrides) to a slot."""
        model = model_overrides(self._settings, slot.entry.id, list(slot.entry.aliases))
        default = self._settings.scheduler
        slot.keep_alive = _first(slot.keep_alive_override, model.keep_alive, default.keep_alive)
        slot.pinned = slot.pin_override or model.pinned
        slot.queue_capacity = _first(model.queue_size, default.queue_size)
        slot.turns.set_limit(_first(model.max_concurrent_requests, self._engine_concurrency(slot.engine)))

    def _engine_concurrency(self, engine: str) -> int:
        """Requests one runner of ``engine`` serves at once: builtin and transformers runners
        answer one at a time (a second would only wait inside them, hidden from the queue
        accounting); vLLM batches concurrent requests, which is its point; so may an upstream."""
        if engine == "vllm":
            return self._settings.vllm.max_concurrent_requests
        return UPSTREAM_CONCURRENCY if engine == "upstream" else 1

    def _info(self, slot: Slot) -> SlotInfo:
        runner = slot.runner
        return SlotInfo(
            id=slot.entry.id,
            aliases=slot.entry.aliases,
            description=slot.entry.description,
            engine=slot.engine,
            state=slot.state,
            device=runner.spec.device if runner else "",
            pid=runner.pid if runner else None,
            memory_bytes=runner.memory_bytes if runner else 0,
            pinned=slot.pinned,
            keep_alive=0.0 if slot.pinned else slot.keep_alive,
            in_flight=slot.leases,
            queued=slot.waiting,
            queue_capacity=slot.queue_capacity,
            last_used=slot.last_used_wall,
            loaded_at=slot.loaded_at_wall if slot.state == ModelState.READY else None,
            error=slot.error,
        )

    # --- requests ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, name: str) -> AsyncIterator[Runner]:
        """A lease on a ready runner for ``name``, loading it first when needed.

        Requests for one model queue FIFO (bounded); a full queue raises QueueFull (HTTP 429).
        """
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        slot = self._slot(name)
        self._check_queue(slot)
        slot.waiting += 1
        try:
            runner = await self._wait_turn(slot)
        finally:
            slot.waiting -= 1
        slot.leases += 1
        started = self._clock()
        try:
            yield runner
        finally:
            slot.leases -= 1
            slot.turns.release()
            self._mark_used(slot, self._clock() - started)

    def _check_queue(self, slot: Slot) -> None:
        # Requests holding a turn are not waiting. While turns are free (idle, loading, or a
        # batching engine below its limit) that many more may wait: they are next to run, so
        # queue_size 0 still serves `turns.limit` at a time.
        capacity = slot.queue_capacity + max(0, slot.turns.limit - slot.leases)
        if slot.waiting < capacity:
            return
        self._publish(slot, "request.rejected",
                      f"queue full ({slot.waiting} waiting, capacity {slot.queue_capacity})")
        # Retry-After: the waiting requests and this one, at the recent pace.
        retry_after = max(1, round(slot.recent_seconds * (slot.waiting + 1)))
        raise QueueFull(
            f"model {slot.entry.id!r} is busy: {slot.waiting} requests are already waiting "
            f"(queue size {slot.queue_capacity}); retry later",
            retry_after=retry_after,
        )

    async def _wait_turn(self, slot: Slot) -> Runner:
        """A ready runner and this request's turn on it (FIFO)."""
        while True:
            # Outside the turn, so that every waiter joins the one load and sees its error.
            await self._ensure_ready(slot)
            await slot.turns.acquire()
            if slot.state == ModelState.READY and slot.runner is not None and not self._closing:
                return slot.runner
            # The model went (unload, crash, shutdown) while this request queued: start over.
            slot.turns.release()

    def _mark_used(self, slot: Slot, seconds: float) -> None:
        slot.last_used = self._clock()
        slot.last_used_wall = self._wall()
        slot.recent_seconds = 0.8 * slot.recent_seconds + 0.2 * max(seconds, 0.01)
        slot.signal.notify()
        if slot.keep_alive == 0 and not slot.pinned:
            self._spawn(self.reap_idle())

    async def _ensure_ready(self, slot: Slot) -> None:
        while True:
            if self._closing:
                raise ShuttingDown("ocrd is shutting down")
            if slot.state == ModelState.READY:
                return
            if slot.state == ModelState.UNLOADING:
                await slot.signal.wait()
                continue
            if slot.state == ModelState.LOADING and slot.load_future is not None:
                future = slot.load_future
            elif self._settings.scheduler.auto_load:
                future = self._begin_load(slot)
            else:
                raise ModelNotReady(
                    f"model {slot.entry.id!r} is not loaded and auto-load is off; "
                    f"load it with `ocrctl load {slot.entry.id}`"
                )
            await asyncio.shield(future)

    # --- loading -------------------------------------------------------------------------------

    async def load(
        self, name: str, *, keep_alive: float | None = None, pin: bool = False,
        engine: str | None = None, quantization: str | None = None,
    ) -> SlotInfo:
        async for _ in self.load_progress(name, keep_alive=keep_alive, pin=pin, engine=engine,
                                          quantization=quantization):
            pass
        return self.info(name)

    async def load_progress(
        self, name: str, *, keep_alive: float | None = None, pin: bool = False,
        engine: str | None = None, quantization: str | None = None,
    ) -> AsyncIterator[Event]:
        """Starts (or joins) a load and yields its events until the model is ready.

        Ends with a ``model.ready`` event; raises the load's error if it fails. The load runs in
        its own task: a caller that goes away does not cancel it.
        """
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        slot = self._slot(name)
        while slot.state == ModelState.UNLOADING:
            await slot.signal.wait()  # else the unload, finishing, would reset the overrides
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        self._override(slot, keep_alive, pin)
        self._choose_engine(slot, engine, quantization)
        self._restarts.forget(slot.entry.id)  # asked for by a person: a fresh start
        # No await from here to the load's start: subscribed now, none of its events is missed.
        subscription = self.events.subscribe(slot.entry.id)
        if slot.state == ModelState.READY:
            yield _ready_event(slot, "already loaded")
            return
        future = slot.load_future if slot.state == ModelState.LOADING else self._begin_load(slot)
        assert future is not None
        ready: Event | None = None
        while ready is None and (event := await subscription.next_until(future)) is not None:
            if event.kind in ("model.loading", "model.progress"):
                yield event
            elif event.kind == "model.ready":
                ready = event
        future.result()  # raises the load's error
        yield ready or _ready_event(slot, "ready")

    def _override(self, slot: Slot, keep_alive: float | None, pin: bool) -> None:
        """Load-time keep-alive and pin, which win over the config until the model unloads."""
        if keep_alive is not None:
            slot.keep_alive_override = keep_alive
        slot.pin_override = slot.pin_override or pin
        self._configure(slot)

    def _choose_engine(self, slot: Slot, engine: str | None, quantization: str | None) -> None:
        """A load's engine and quantization wishes (the planner honours them or says why it
        cannot); a loaded model must be unloaded to change them."""
        if engine is None and quantization is None:
            return
        self._check_wishes(slot, engine, quantization)
        quantization = None if quantization == "auto" else quantization
        current = slot.decision
        changes = (engine is not None and engine != slot.engine) or (
            quantization is not None and current is not None and quantization != current.quantization)
        if changes and slot.state in (ModelState.READY, ModelState.LOADING):
            raise Conflict(
                f"{slot.entry.id} is already {slot.state.value} with the {slot.engine} engine; "
                f"unload it first to load it differently"
            )
        if engine is not None:
            slot.engine_override = slot.engine = engine
        if quantization is not None:
            slot.quantization_override = quantization

    def _check_wishes(self, slot: Slot, engine: str | None, quantization: str | None) -> None:
        """InvalidRequest for an engine the model lacks, or a quantization its engine cannot do."""
        wanted = self._models.engine_for(slot.entry, engine) if engine else slot.engine
        quantizes = wanted == "transformers" or (not engine and "transformers" in slot.entry.engines)
        if quantization not in (None, "auto", "none") and not quantizes:
            raise InvalidRequest(
                f"{slot.entry.id} runs on the {wanted} engine, which does not quantize; "
                f"quantization (8bit/4bit) is for the transformers engine", param="quantization")

    def _begin_load(self, slot: Slot, adopted: Runner | None = None,
                    message: str = "") -> asyncio.Future[None]:
        slot.state = ModelState.LOADING
        slot.error = ""
        slot.decision = None  # planned afresh in _make_room
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Failed loads are reported through their waiters; don't let asyncio log them again.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        slot.load_future = future
        self._publish(slot, "model.loading", message or f"loading with the {slot.engine} engine")
        self._spawn(self._run_load(slot, future, adopted))
        return future

    async def _run_load(self, slot: Slot, future: asyncio.Future[None],
                        adopted: Runner | None = None) -> None:
        """Plans, makes room and starts a runner (or, given one, attaches to an adopted one)."""
        runner: Runner | None = adopted
        try:
            if runner is None:
                decision = await self._make_room(slot)
                runner = self._factory(self._models.runner_spec(slot.entry, decision))
            self._starting[slot.entry.id] = runner
            starting = runner.start(progress=functools.partial(self._on_progress, slot),
                                    on_exit=functools.partial(self._on_runner_exit, slot, runner))
            await asyncio.wait_for(starting, timeout=self._settings.scheduler.load_timeout)
            if self._closing:
                raise ShuttingDown("ocrd is shutting down")
        except BaseException as exc:
            if runner is not None:
                # Still LOADING meanwhile: later arrivals join this load and get its error too.
                await _stop_quietly(runner, grace=0)
            self._starting.pop(slot.entry.id, None)
            timeout = self._settings.scheduler.load_timeout
            self._fail_load(slot, future, _load_error(slot, exc, timeout))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        slot.runner = runner
        self._starting.pop(slot.entry.id, None)
        slot.state = ModelState.READY
        slot.loaded_at_wall = self._wall()
        slot.last_used = self._clock()  # keep-alive counts from the load
        self._restarts.ready(slot.entry.id)
        memory = f", {runner.memory_bytes / 2**20:.0f} MiB" if runner.memory_bytes else ""
        plan = f"; {summary(slot.decision)}" if slot.decision is not None else ""
        how = "adopted" if adopted is not None else "ready"
        self._publish(slot, "model.ready", f"{how} (pid {runner.pid}{memory}){plan}", progress=1.0)
        future.set_result(None)
        slot.signal.notify()

    async def adopt(self, runner: Runner, decision: Decision, what: str) -> SlotInfo:
        """Takes over ``runner``, which a previous daemon left running (``what`` says which, e.g.
        "container ocrd-x-1a2b3c"): its model becomes READY without a load, keep-alive counting
        from now. ``decision`` is the placement it runs with (memory accounting, `ocrctl ps`).
        The runner's ``start()`` attaches to it; if that fails, the model is FAILED with why."""
        slot = self._slot(runner.model_id)
        if slot.state != ModelState.NOT_LOADED:
            await _stop_quietly(runner, grace=0)
            raise Conflict(f"{slot.entry.id} is already {slot.state.value}; not adopting {what}")
        slot.engine_override = slot.engine = decision.engine  # what runs it, whatever the config
        self._configure(slot)  # the engine decides how many requests run at once
        future = self._begin_load(slot, adopted=runner, message=f"adopting {what}")
        slot.decision = decision  # after _begin_load, which clears it
        slot.holds_room = True
        with contextlib.suppress(OcrdError):
            await asyncio.shield(future)
        return self.info(slot.entry.id)

    def _fail_load(self, slot: Slot, future: asyncio.Future[None], error: OcrdError) -> None:
        slot.state = ModelState.FAILED
        slot.error = error.message
        slot.holds_room = False
        self._publish(slot, "model.failed", error.message)
        if not future.done():
            future.set_exception(error)
        slot.signal.notify()

    def _on_progress(self, slot: Slot, step: LoadProgress) -> None:
        if slot.state == ModelState.LOADING:
            self._publish(slot, "model.progress", step.message or step.stage,
                          progress=step.progress, stage=step.stage)

    def _on_runner_exit(self, slot: Slot, runner: Runner, reason: str) -> None:
        """A runner ended on its own: its requests fail by themselves, the slot goes FAILED."""
        if slot.runner is not runner:
            return
        slot.runner = None
        slot.holds_room = False
        slot.error = f"runner exited: {reason}"
        if slot.state == ModelState.UNLOADING:
            # The unload under way finishes the slot; a new load must not start meanwhile.
            log.warning("%s: %s while unloading", slot.entry.id, slot.error)
            return
        slot.state = ModelState.FAILED
        self._publish(slot, "model.failed", slot.error)
        slot.signal.notify()
        self._schedule_restart(slot)

    def _restart_policy(self, slot: Slot) -> tuple[int, float]:
        """(restarts allowed in a row, first backoff in seconds) for the slot's engine."""
        if slot.engine == "vllm":
            return self._settings.vllm.restart_attempts, self._settings.vllm.restart_backoff
        return 0, 0.0

    def _schedule_restart(self, slot: Slot) -> None:
        """After a crash: loads the model again after the backoff (``ocrd.core.restarts``), unless the
        restarts allowed are spent."""
        attempts, base = self._restart_policy(slot)
        if not attempts or self._closing:
            return
        restart = self._restarts.after_crash(slot.entry.id, attempts, base)
        if restart is None:
            self._publish(slot, "model.failed", f"not restarted: {attempts} restart(s) in a row "
                                                 f"already (vllm.restart_attempts)")
            return
        self._publish(slot, "model.failed", f"restarting in {restart.delay:g}s (restart "
                                             f"{restart.number} of {attempts}, vllm.restart_attempts)")
        self._spawn(self._restart_later(slot, restart.delay))

    async def _restart_later(self, slot: Slot, delay: float) -> None:
        await asyncio.sleep(delay)
        # A request, an unload or a load may have moved the slot on meanwhile: leave it be.
        if slot.state == ModelState.FAILED and not self._closing:
            try:
                await asyncio.shield(self._begin_load(slot))
            except OcrdError:
                self._schedule_restart(slot)  # the restart failed to load: the next, if any

    async def _make_room(self, slot: Slot) -> Decision:
        """The decision to load ``slot`` with, after ``ocrd.core.placement`` evicted what it needs
        evicted; recorded on the slot before the room lock goes, so that the next load plans
        with this one counted."""
        async with self._room:
            decision = await self._placement.make_room(slot)
            slot.decision = decision
            slot.engine = decision.engine
            self._configure(slot)  # the engine decides how many requests run at once
            slot.holds_room = True
            log.info("%s: %s", slot.entry.id, "; ".join(decision.reasons))
            return decision

    # --- planning ------------------------------------------------------------------------------

    async def explain(self, name: str, engine: str | None = None,
                      quantization: str | None = None) -> Decision:
        """The decision a load of ``name`` would be made with now (``ocrctl mode explain``)."""
        try:
            slot = self._slot(name)
        except ModelNotFound as exc:
            if exc.code != "model_not_downloaded":
                raise
            return await self._explain_not_downloaded(self._models.catalog.resolve(name), engine,
                                                      quantization)
        self._check_wishes(slot, engine, quantization)
        wishes = engine is not None or quantization not in (None, "auto")
        if slot.state in (ModelState.READY, ModelState.LOADING) and slot.decision is not None:
            state = slot.state.value
            if not wishes:
                return with_reason_first(slot.decision, f"{slot.entry.id} is {state}: this is the "
                                                        f"plan it was loaded with")
            decision = await self._placement.plan(slot, engine, quantization)
            return with_reason_first(decision, f"{slot.entry.id} is {state} with "
                                               f"{summary(slot.decision)}; unload it to load it so")
        return await self._placement.plan(slot, engine, quantization)

    async def _explain_not_downloaded(self, entry: CatalogEntry, engine: str | None,
                                      quantization: str | None) -> Decision:
        """Will it fit before the download? Planned from the catalog's sizes on a slot that is not
        kept: the model stays unservable (a load still fails) until it is pulled."""
        slot = Slot(entry=entry, engine=self._models.engine_for(entry))
        self._check_wishes(slot, engine, quantization)
        decision = await self._placement.plan(slot, engine, quantization)
        download = f" (about {gib(entry.bf16_bytes)} in bf16)" if entry.bf16_bytes else ""
        return with_reason_first(decision, f"{entry.id} is not downloaded: this is what a load would "
                                           f"get once it is; fetch it{download} with "
                                           f"`ocrctl pull {entry.id}`")

    # --- unloading -----------------------------------------------------------------------------

    async def unload(self, name: str) -> UnloadResult:
        """Unloads a model once its in-flight requests finish (bounded by drain_timeout)."""
        slot = self._slot(name)
        self._restarts.forget(slot.entry.id)  # asked for by a person: no restart pending counts
        while slot.state in (ModelState.LOADING, ModelState.UNLOADING):
            await slot.signal.wait()
        if slot.state != ModelState.READY:
            if slot.state == ModelState.FAILED:
                slot.state = ModelState.NOT_LOADED
                slot.signal.notify()
            self._reset_overrides(slot)
            return UnloadResult(slot.entry.id, was_loaded=False, freed_bytes=0)
        freed = slot.runner.memory_bytes if slot.runner else 0
        # A task of its own: a caller that goes away must not leave the slot UNLOADING.
        await asyncio.shield(self._spawn(self._unload_slot(slot, "unloaded on request")))
        return UnloadResult(slot.entry.id, was_loaded=True, freed_bytes=freed)

    async def _unload_slot(self, slot: Slot, reason: str) -> None:
        slot.state = ModelState.UNLOADING
        self._publish(slot, "model.unloading", reason)
        timeout = self._settings.scheduler.drain_timeout
        if not await drain([slot], timeout):
            self._abandon_unload(slot)
            raise Conflict(
                f"model {slot.entry.id!r} is still serving {slot.leases} request(s) after "
                f"{timeout:g}s; try again when they finish"
            )
        if slot.runner is not None:
            await _stop_quietly(slot.runner, grace=timeout)
            # Cleared only once stopped: if this task is cancelled, shutdown still stops it.
            slot.runner = None
        slot.state = ModelState.NOT_LOADED
        slot.holds_room = False
        slot.loaded_at_wall = None
        self._reset_overrides(slot)
        self._publish(slot, "model.unloaded", reason)
        slot.signal.notify()

    def _abandon_unload(self, slot: Slot) -> None:
        """Requests outlasted the drain: the model keeps serving them (unless it died meanwhile)."""
        if slot.runner is not None:
            slot.state = ModelState.READY
            self._publish(slot, "model.ready", "unload abandoned: requests still running")
        else:
            slot.state = ModelState.FAILED
            self._publish(slot, "model.failed", slot.error)
        slot.signal.notify()

    def _reset_overrides(self, slot: Slot) -> None:
        slot.keep_alive_override = None
        slot.pin_override = False
        slot.engine_override = None
        slot.quantization_override = None
        slot.engine = self._models.engine_for(slot.entry)
        self._configure(slot)

    async def reap_idle(self) -> list[str]:
        """Unloads every ready model idle for longer than its keep-alive; returns their ids."""
        if self._closing:
            return []
        now = self._clock()
        expired = [
            slot for slot in self._slots.values()
            if slot.state == ModelState.READY and is_idle(slot) and not slot.pinned
            and now - (slot.last_used or now) >= slot.keep_alive
        ]
        reaped = []
        for slot in expired:
            # Re-checked: an earlier unload in this loop gave requests time to arrive.
            if slot.state == ModelState.READY and is_idle(slot):
                with contextlib.suppress(Conflict):
                    await self._unload_slot(slot, f"idle for {slot.keep_alive:g}s (keep-alive)")
                    reaped.append(slot.entry.id)
        return reaped

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the idle reaper (call from the running event loop)."""
        self._reaper = asyncio.create_task(self._reap_forever(), name="ocrd-reaper")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.scheduler.reap_interval)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("idle reaper failed")

    def apply_settings(self, settings: Settings) -> None:
        """Takes a reloaded configuration (SIGHUP): keep-alive, pins and queue sizes."""
        self._settings = settings
        self._models.apply_settings(settings)
        for slot in self._slots.values():
            self._configure(slot)

    async def shutdown(self) -> None:
        """Refuses new requests, waits (bounded) for in-flight ones, stops every runner."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        self.events.publish(Event(kind="daemon.stopping", message="stopping all runners"))
        for slot in self._slots.values():
            slot.signal.notify()  # waiters see _closing and give up
        await drain(list(self._slots.values()), self._settings.scheduler.drain_timeout)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(self._close_slot(slot) for slot in self._slots.values()))

    async def _close_slot(self, slot: Slot) -> None:
        future = slot.load_future
        if future is not None and not future.done():
            # Its task was cancelled before it ran, so nothing else will wake its waiters.
            self._fail_load(slot, future, ShuttingDown("ocrd is shutting down"))
        if slot.runner is not None:
            await _stop_quietly(slot.runner, grace=5.0)
            slot.runner = None
        slot.holds_room = False
        if slot.state != ModelState.NOT_LOADED:
            slot.state = ModelState.NOT_LOADED
            self._publish(slot, "model.unloaded", "daemon stopping")
        slot.signal.notify()

    # --- helpers -------------------------------------------------------------------------------

    def _publish(self, slot: Slot, kind: str, message: str, *, progress: float = -1.0,
                 stage: str = "") -> None:
        event = self.events.publish(Event(kind=kind, model=slot.entry.id, state=slot.state,
                                          message=message, progress=progress, stage=stage))
        log.info("%s %s: %s", event.kind, event.model, event.message)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Whoever needs the outcome awaits the task; the rest must not be logged as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def runner_of(self, name: str) -> Runner:
        """The runner of a loaded model (ready, or unloading while its requests finish), for
        `ocrctl logs`; Conflict saying how to load the model when it has none."""
        slot = self._slot(name)
        if slot.runner is not None:
            return slot.runner
        model = slot.entry.id
        if slot.state == ModelState.LOADING:
            raise Conflict(f"model {model!r} is still loading: `ocrctl load {model}` shows its "
                           f"progress, log lines included; ask for its logs once it is ready")
        why = f" ({slot.error})" if slot.state == ModelState.FAILED and slot.error else ""
        raise Conflict(f"model {model!r} is not loaded{why}; load it with `ocrctl load {model}`")


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _ready_event(slot: Slot, message: str) -> Event:
    return Event(kind="model.ready", model=slot.entry.id, state=ModelState.READY,
                 message=message, progress=1.0)


def _load_error(slot: Slot, exc: BaseException, timeout: float) -> OcrdError:
    if isinstance(exc, OcrdError):
        return exc
    if isinstance(exc, TimeoutError):
        return ModelLoadFailed(
            f"model {slot.entry.id!r} did not load within {timeout:g}s (scheduler.load_timeout)"
        )
    if isinstance(exc, asyncio.CancelledError):
        return ShuttingDown(f"loading {slot.entry.id!r} was cancelled: ocrd is shutting down")
    log.error("loading %s failed", slot.entry.id, exc_info=exc)
    return ModelLoadFailed(f"model {slot.entry.id!r} failed to load: {exc}")


async def _stop_quietly(runner: Runner, grace: float) -> None:
    try:
        await runner.stop(grace)
    except Exception:
        log.exception("stopping the runner of %s failed", runner.model_id)
