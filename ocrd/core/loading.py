"""The scheduler's load path: loads (asked for, or started by a request), adoption, restarts.

Part of ``Scheduler`` (see ``ocrd.core.slot_table``). Every load is made from the planner's
decision of that moment (``ocrd.planning.planner``: engine, device, quantization), after
``ocrd.core.placement`` made room for it. Loads run in tasks of their own: a caller that goes
away (a closed HTTP connection, a cancelled gRPC stream) never leaves a slot half loaded, and
every waiter joins the one load and sees its error.

Runners a previous daemon left running (vLLM containers) are taken over with ``adopt``: the model
is ready without a load. A runner that crashes while serving leaves its slot FAILED with its
reason; where its engine's restart policy allows (``ocrd.core.engines``: vLLM's
``vllm.restart_attempts``), the model is loaded again after a backoff that doubles with each
restart in a row (``ocrd.core.restarts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from ocrd.core.engines import engine_kind, replica_count
from ocrd.core.slot_table import SlotTable, stop_quietly
from ocrd.core.slots import Slot, SlotInfo
from ocrd.core.wishes import LoadWish, check_engine, check_quantization
from ocrd.errors import Conflict, ModelLoadFailed, OcrdError, ShuttingDown
from ocrd.events import Event, ModelState
from ocrd.planning.planner import Decision, summary
from ocrd.runners.base import LoadProgress, Runner
from ocrd.runners.replicas import ReplicaSet

log = logging.getLogger("ocrd.core.scheduler")


class Loading(SlotTable):
    # --- loads asked for -----------------------------------------------------------------------

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

        ``engine`` and ``quantization`` as a user writes them ("auto" and "" are no wish). Ends
        with a ``model.ready`` event; raises the load's error if it fails. The load runs in its
        own task: a caller that goes away does not cancel it.
        """
        wish = LoadWish.asked(engine, quantization, keep_alive, pin)
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        slot = self._slot(name)
        while slot.state == ModelState.UNLOADING:
            await slot.signal.wait()  # else the unload, finishing, would reset the wishes
        if self._closing:
            raise ShuttingDown("ocrd is shutting down")
        self._take_wish(slot, wish)
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

    def _take_wish(self, slot: Slot, wish: LoadWish) -> None:
        """A load's wishes, which win over the configuration until the model unloads: keep-alive
        and pin at once; engine and quantization (the planner honours them or says why it
        cannot) unless the model is loaded, or loading, otherwise: it must be unloaded first."""
        slot.load = slot.load.then(LoadWish(keep_alive=wish.keep_alive, pin=wish.pin))
        self._configure(slot)
        if not wish.plans:
            if slot.load.pin:
                self._pins_changed()
            return
        self._check_wish(slot, wish)
        current = slot.decision
        changes = (wish.engine is not None and wish.engine != slot.engine) or (
            wish.quantization is not None and current is not None
            and wish.quantization != current.quantization)
        if changes and slot.state in (ModelState.READY, ModelState.LOADING):
            raise Conflict(
                f"{slot.entry.id} is already {slot.state.value} with the {slot.engine} engine; "
                f"unload it first to load it differently"
            )
        slot.load = slot.load.then(LoadWish(engine=wish.engine, quantization=wish.quantization))
        if wish.engine is not None:
            slot.engine = wish.engine
        self._configure(slot)
        if slot.load.pin:
            self._pins_changed()

    def _check_wish(self, slot: Slot, wish: LoadWish) -> None:
        """InvalidRequest for an engine the model lacks, or a quantization its engine cannot do."""
        if wish.engine is not None:
            check_engine(slot.entry, wish.engine)
        check_quantization(slot.entry, wish, slot.engine)

    # --- the load itself -----------------------------------------------------------------------

    def _begin_load(self, slot: Slot, adopted: Runner | None = None,
                    message: str = "") -> asyncio.Future[None]:
        slot.state = ModelState.LOADING
        slot.error = ""
        slot.decision, slot.replica_decisions = None, ()  # planned afresh in _make_room
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
                decisions = await self._make_room(slot)
                runners = [self._factory(self._models.runner_spec(slot.wishes, d, len(decisions)))
                           for d in decisions]
                runner = runners[0] if len(runners) == 1 else ReplicaSet(runners)
            self._starting[slot.entry.id] = runner
            starting = runner.start(progress=functools.partial(self._on_progress, slot),
                                    on_exit=functools.partial(self._on_runner_exit, slot, runner))
            await asyncio.wait_for(starting, timeout=self._settings.scheduler.load_timeout)
            if self._closing:
                raise ShuttingDown("ocrd is shutting down")
        except BaseException as exc:
            if runner is not None:
                # Still LOADING meanwhile: later arrivals join this load and get its error too.
                await stop_quietly(runner, grace=0)
            self._starting.pop(slot.entry.id, None)
            timeout = self._settings.scheduler.load_timeout
            self._fail_load(slot, future, _load_error(slot, exc, timeout))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._loaded(slot, future, runner, adopted=adopted is not None)

    def _loaded(self, slot: Slot, future: asyncio.Future[None], runner: Runner, *, adopted: bool) -> None:
        slot.runner = runner
        self._starting.pop(slot.entry.id, None)
        slot.state = ModelState.READY
        slot.loaded_at_wall = self._wall()
        slot.last_used = self._clock()  # keep-alive counts from the load
        slot.last_used_wall = None  # no request has finished on this runner yet (ocrctl ps: never)
        self._restarts.ready(slot.entry.id)
        if engine_kind(slot.engine).hf_cache:
            self._models.cache_changed()  # its runner may have downloaded what the cache lacked
        details = [f"pid {runner.pid}"] if runner.pid is not None else []  # an upstream: no process of ocrd's
        if runner.memory_bytes:
            details.append(f"{runner.memory_bytes / 2**20:.0f} MiB")
        said = f" ({', '.join(details)})" if details else ""
        plan = f"; {summary(slot.decision)}" if slot.decision is not None else ""
        how = "adopted" if adopted else "ready"
        self._publish(slot, "model.ready", f"{how}{said}{plan}", progress=1.0)
        future.set_result(None)
        slot.signal.notify()

    async def _make_room(self, slot: Slot) -> tuple[Decision, ...]:
        """The decisions to load ``slot``'s replicas with (one for most models), after
        ``ocrd.core.placement`` evicted what the first needs evicted; recorded on the slot before
        the room lock goes, so that the next load plans with these counted."""
        async with self._room:
            decision = await self._placement.make_room(slot)
            count = replica_count(decision.engine, slot.wishes.replicas, self._settings)
            decisions = await self._placement.replica_decisions(slot, decision, count)
            slot.decision, slot.replica_decisions = decision, decisions
            slot.engine = decision.engine
            self._configure(slot)  # the engine and the replicas decide how many requests run at once
            slot.holds_room = True
            replicas = f" ({len(decisions)} replicas)" if len(decisions) > 1 else ""
            log.info("%s%s: %s", slot.entry.id, replicas, "; ".join(decision.reasons))
            return decisions

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

    # --- adoption ------------------------------------------------------------------------------

    async def adopt(self, runner: Runner, decision: Decision, what: str) -> SlotInfo:
        """Takes over ``runner``, which a previous daemon left running (``what`` says which, e.g.
        "container ocrd-x-1a2b3c"): its model becomes READY without a load, keep-alive counting
        from now. ``decision`` is the placement it runs with (memory accounting, `ocrctl ps`).
        The runner's ``start()`` attaches to it; if that fails, the model is FAILED with why."""
        slot = self._slot(runner.model_id)
        if slot.state != ModelState.NOT_LOADED:
            await stop_quietly(runner, grace=0)
            raise Conflict(f"{slot.entry.id} is already {slot.state.value}; not adopting {what}")
        # What runs it, whatever the config; the engine decides how many requests run at once.
        slot.load = slot.load.then(LoadWish(engine=decision.engine))
        slot.engine = decision.engine
        self._configure(slot)
        future = self._begin_load(slot, adopted=runner, message=f"adopting {what}")
        slot.decision = decision  # after _begin_load, which clears it
        slot.holds_room = True
        with contextlib.suppress(OcrdError):
            await asyncio.shield(future)
        return self.info(slot.entry.id)

    # --- crashes and restarts ------------------------------------------------------------------

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

    def _schedule_restart(self, slot: Slot) -> None:
        """After a crash: loads the model again after the backoff (``ocrd.core.restarts``), unless
        its engine never restarts or the restarts it allows are spent."""
        policy = engine_kind(slot.engine).restarts(self._settings)
        attempts = policy.attempts
        if not attempts or self._closing:
            return
        restart = self._restarts.after_crash(slot.entry.id, attempts, policy.backoff)
        if restart is None:
            self._publish(slot, "model.failed", f"not restarted: {attempts} restart(s) in a row "
                                                 f"already ({policy.setting})")
            return
        self._publish(slot, "model.failed", f"restarting in {restart.delay:g}s (restart "
                                             f"{restart.number} of {attempts}, {policy.setting})")
        self._spawn(self._restart_later(slot, restart.delay))

    async def _restart_later(self, slot: Slot, delay: float) -> None:
        await asyncio.sleep(delay)
        # A request, an unload or a load may have moved the slot on meanwhile: leave it be.
        if slot.state == ModelState.FAILED and not self._closing:
            try:
                await asyncio.shield(self._begin_load(slot))
            except OcrdError:
                self._schedule_restart(slot)  # the restart failed to load: the next, if any


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
