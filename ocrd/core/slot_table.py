"""The scheduler's state: a slot per model, and the transitions every path of it shares.

``Scheduler`` (``ocrd.core.scheduler``) is the one owner of model state. Its code is split along
its paths so that each reads on its own, all of them methods of the one object: this base holds
the state (the slots by model id, the runners being started, the room lock, the restart
bookkeeping) and what every path uses (a model's slot with its wishes applied, events,
background tasks, the unload of a slot); ``ocrd.core.loading`` adds loads, adoption and
restarts; ``ocrd.core.scheduler`` the requests, the unloads asked for, the idle reaper,
``explain`` and shutdown. Nothing outside these three mutates a slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.engines import engine_kind, replica_count
from ocrd.core.placement import Placement
from ocrd.core.restarts import RestartBackoff
from ocrd.core.slots import Slot, SlotInfo, drain
from ocrd.core.wishes import NO_LOAD_WISH, LoadWish
from ocrd.errors import Conflict
from ocrd.events import Event, EventBus, ModelState
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.base import Runner, RunnerFactory, WarmRunnerInfo

log = logging.getLogger("ocrd.core.scheduler")

Clock = Callable[[], float]


class SlotTable:
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
        warm_runners: Callable[[], Sequence[WarmRunnerInfo]] = tuple,
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
        # Told the models pinned by a load (and their wishes) whenever that changes: the daemon
        # keeps them in state_dir and loads them again after a restart (ocrd.core.pins).
        self.on_pins: Callable[[dict[str, LoadWish]], None] = lambda pins: None
        self._restarts = RestartBackoff(clock)
        # The warm runners waiting for a model (ocrd.runners.warm_pool): `ocrctl ps`, the planner.
        self.warm_runners = warm_runners
        self._placement = Placement(self._models, self._gpu, self._slots, lambda: self._settings,
                                    self._unload_slot, warm_runners)

    # --- slots ---------------------------------------------------------------------------------

    def info(self, name: str) -> SlotInfo:
        return self._info(self._slot(name))

    def _info(self, slot: Slot) -> SlotInfo:
        runner = slot.runner
        replicas = runner.replicas() if runner is not None else ()
        return SlotInfo(
            id=slot.entry.id,
            aliases=slot.entry.aliases,
            description=slot.entry.description,
            engine=slot.engine,
            state=slot.state,
            # Replicas on several GPUs: each of their devices, in order.
            device=",".join(dict.fromkeys(r.spec.device for r in replicas)) if runner else "",
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
            replica_pids=tuple(pid for r in replicas if (pid := r.pid)),
            license=slot.entry.license,
            license_note=slot.entry.license_note,
            concurrency=slot.turns.limit,
        )

    def _slot(self, name: str) -> Slot:
        return self._slot_for(self._models.resolve(name))

    def _slot_for(self, entry: CatalogEntry) -> Slot:
        slot = self._slots.get(entry.id)
        if slot is None:
            slot = Slot(entry=entry, engine="", wishes=self._models.wishes(entry))
            self._configure(slot, engine=True)
            self._slots[entry.id] = slot
        elif slot.entry != entry and slot.state in (ModelState.NOT_LOADED, ModelState.FAILED):
            # The directory changed (SIGHUP added or removed an [[upstreams]] entry): a model
            # that is not loaded is served as the directory says now.
            slot.entry = entry
            self._configure(slot, engine=True)
        return slot

    def _configure(self, slot: Slot, *, engine: bool = False) -> None:
        """Resolves what the settings and the slot's loads ask of its model, once
        (``ocrd.core.wishes``), and applies it; with ``engine``, also the engine the
        configuration gives it (a load's wish or the planner's decision may change it later)."""
        configured = self._models.wishes(slot.entry)
        if engine:
            slot.engine = self._models.engine_for(configured)
        slot.wishes = configured if slot.load == NO_LOAD_WISH else self._models.wishes(slot.entry, slot.load)
        wishes = slot.wishes
        slot.keep_alive = wishes.keep_alive
        slot.pinned = wishes.pinned
        slot.queue_capacity = wishes.queue_size
        concurrency = wishes.max_concurrent_requests
        if concurrency is None:  # the engine's (ocrd.core.engines)
            concurrency = engine_kind(slot.engine).concurrency(self._settings)
        # Each replica serves that many: those of the load under way (or done), else as planned.
        replicas = len(slot.replica_decisions) or replica_count(slot.engine, wishes.replicas, self._settings)
        slot.turns.set_limit(concurrency * replicas)

    # --- unloading a slot ----------------------------------------------------------------------

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
            await stop_quietly(slot.runner, grace=timeout)
            # Cleared only once stopped: if this task is cancelled, shutdown still stops it.
            slot.runner = None
        slot.state = ModelState.NOT_LOADED
        slot.holds_room = False
        slot.loaded_at_wall = None
        self._forget_wishes(slot)
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

    def _forget_wishes(self, slot: Slot) -> None:
        """The model is unloaded: what its loads asked for no longer holds."""
        was_pinned = slot.load.pin
        slot.load = NO_LOAD_WISH
        self._configure(slot, engine=True)
        if was_pinned:
            self._pins_changed()

    def _pins_changed(self) -> None:
        self.on_pins({slot.entry.id: slot.load for slot in self._slots.values() if slot.load.pin})

    # --- helpers -------------------------------------------------------------------------------

    def _publish(self, slot: Slot, kind: str, message: str, *, progress: float = -1.0,
                 stage: str = "") -> None:
        event = self.events.publish(Event(kind=kind, model=slot.entry.id, state=slot.state,
                                          message=message, progress=progress, stage=stage))
        # A model that failed (its load, or its runner) is what an operator looks for in the log.
        level = logging.WARNING if kind == "model.failed" else logging.INFO
        # Some messages start with the model's id already (an upstream's, to read well alone).
        log.log(level, "%s %s: %s", event.kind, event.model, event.message.removeprefix(f"{event.model}: "))

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Whoever needs the outcome awaits the task; the rest must not be logged as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task


async def stop_quietly(runner: Runner, grace: float) -> None:
    try:
        await runner.stop(grace)
    except Exception:
        log.exception("stopping the runner of %s failed", runner.model_id)
