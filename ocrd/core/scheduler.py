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

Every load is made from the planner's decision of that moment (``ocrd.planning.planner``: engine,
device, quantization), which ``explain`` also returns (``ocrd.core.explain``). The GPU snapshot
comes from the injected ``gpu_probe`` (NVML; tests pass a FakeNvml one) and is taken off the
event loop, as are the reads of safetensors headers. A load that does not fit evicts idle,
unpinned models by their measured memory (NVML per process on a GPU, the runner's own figure
otherwise), least recently used first, and fails with InsufficientMemory when that is not enough
(``ocrd.core.placement``).

Runners a previous daemon left running (vLLM containers) are taken over with ``adopt``: the model
is ready without a load. A runner that crashes while serving leaves its slot FAILED with its
reason; where the engine's restart policy allows (``vllm.restart_attempts``), the scheduler
loads it again after a backoff that doubles with each restart in a row (``ocrd.core.restarts``).

What differs between engines (how many requests run at once, restarts, whether a model counts
toward max_loaded_models) is the engine table's (``ocrd.core.engines``); what the settings ask of
a model is resolved once per slot (``ocrd.core.wishes``). The class is split along its paths: its
state and shared transitions in ``ocrd.core.slot_table``, loads, adoption and restarts in
``ocrd.core.loading``, the rest here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ocrd.catalog import CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.explain import explain_not_downloaded, explain_slot
from ocrd.core.loading import Loading
from ocrd.core.slot_table import log, stop_quietly
from ocrd.core.slots import Commitment, Slot, SlotInfo, UnloadResult, drain, is_idle
from ocrd.core.wishes import LoadWish
from ocrd.errors import Conflict, ModelNotFound, ModelNotReady, QueueFull, ShuttingDown
from ocrd.events import Event, ModelState
from ocrd.planning.planner import Decision
from ocrd.runners.base import Runner

__all__ = ["Scheduler", "SlotInfo", "UnloadResult"]


class Scheduler(Loading):
    """The one owner of model state (see the module doc); built as ``Scheduler(settings,
    directory_or_catalog, runner_factory, events, clock=, wall_clock=, gpu_probe=)``."""

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

    def turns(self, name: str) -> int:
        """How many requests ``name`` serves at once (concurrency x replicas), as configured now;
        a request that sends many at once (a document's pages) sends no more than that."""
        return self._slot(name).turns.limit

    def models(self) -> list[SlotInfo]:
        """Every model this host can serve, in catalog order, whatever its state."""
        return [self._info(self._slot_for(entry)) for entry in self._models.available()]

    def active_models(self) -> list[SlotInfo]:
        """The models loaded, loading, unloading or failed, without listing what the host could
        serve (which reads the Hugging Face cache for every catalog model): for status lines."""
        return [self._info(slot) for slot in self._slots.values() if slot.state != ModelState.NOT_LOADED]

    def committed_models(self) -> list[Commitment]:
        """The models this node has undertaken to serve: preloaded (``[models.X] preload``) and
        pinned by a load. The daemon loads them at start; ``/health/ready`` waits for them. A
        preloaded name this host cannot serve is one too (state ``unavailable``, and why)."""
        slots = {slot.entry.id: slot for slot in self._slots.values() if slot.load.pin}
        missing: list[Commitment] = []
        for name, per_model in self.settings.models.items():
            if per_model.preload:
                try:
                    slot = self._slot(name)
                except ModelNotFound as exc:
                    missing.append(Commitment(name, "unavailable", exc.message))
                    continue
                slots.setdefault(slot.entry.id, slot)
        return [Commitment(slot.entry.id, slot.state.value, slot.error) for slot in slots.values()] + missing

    # --- requests ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, model: str | CatalogEntry, *, batch: bool = False) -> AsyncIterator[Runner]:
        """A lease on a ready runner for ``model``, loading it first when needed: a name, or
        the entry ``resolve`` gave for the request a moment ago (not looked up again).

        Requests for one model queue FIFO (bounded); a full queue raises QueueFull (HTTP 429).
        ``batch`` (a batch line): below live requests, which go first whenever they wait; not
        counted in the queue (the batch runner bounds its own lines in flight).
        """
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        slot = self._slot(model) if isinstance(model, str) else self._slot_for(model)
        if not batch:
            self._check_queue(slot)
            slot.waiting += 1
        try:
            runner = await self._wait_turn(slot, low=batch)
        finally:
            if not batch:
                slot.waiting -= 1
        slot.leases += 1
        started = self._clock()
        try:
            yield runner
        finally:
            slot.leases -= 1
            seconds = self._clock() - started
            slot.turns.release(live_seconds=None if batch else seconds)
            self._mark_used(slot, seconds)

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

    async def _wait_turn(self, slot: Slot, *, low: bool = False) -> Runner:
        """A ready runner and this request's turn on it (FIFO; ``low``: after live requests)."""
        while True:
            # Outside the turn, so that every waiter joins the one load and sees its error.
            await self._ensure_ready(slot)
            await slot.turns.acquire(low=low)
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

    # --- planning ------------------------------------------------------------------------------

    async def explain(self, name: str, engine: str | None = None,
                      quantization: str | None = None) -> Decision:
        """The decision a load of ``name`` would be made with now (``ocrctl mode explain``), with
        ``engine`` and ``quantization`` as a user writes them ("auto" and "" are no wish)."""
        wish = LoadWish.asked(engine, quantization)
        try:
            slot = self._slot(name)
        except ModelNotFound as exc:
            if exc.code != "model_not_downloaded":
                raise
            slot = self._unkept_slot(self._models.catalog.resolve(name), wish)
            self._check_wish(slot, wish)
            return await explain_not_downloaded(self._placement, slot)
        self._check_wish(slot, wish)
        wishes = self._models.wishes(slot.entry, slot.load.then(wish))
        return await explain_slot(self._placement, slot, wish, wishes)

    def _unkept_slot(self, entry: CatalogEntry, wish: LoadWish) -> Slot:
        """A slot to plan ``entry`` on that the scheduler does not keep (not servable yet)."""
        engine = self._models.engine_for(self._models.wishes(entry))
        return Slot(entry=entry, engine=engine, wishes=self._models.wishes(entry, wish))

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
            self._forget_wishes(slot)
            return UnloadResult(slot.entry.id, was_loaded=False, freed_bytes=0)
        freed = slot.runner.memory_bytes if slot.runner else 0
        # A task of its own: a caller that goes away must not leave the slot UNLOADING.
        await asyncio.shield(self._spawn(self._unload_slot(slot, "unloaded on request")))
        return UnloadResult(slot.entry.id, was_loaded=True, freed_bytes=freed)

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
            await stop_quietly(slot.runner, grace=5.0)
            slot.runner = None
        slot.holds_room = False
        if slot.state != ModelState.NOT_LOADED:
            slot.state = ModelState.NOT_LOADED
            self._publish(slot, "model.unloaded", "daemon stopping")
        slot.signal.notify()

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
