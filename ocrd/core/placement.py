"""Placement: the planner's decision for loading a model now, and the room it needs made first.

The scheduler owns model state; this module owns the question "where does this model go, and who
must make way?". It reads the slots (what is loaded, idle, pinned, holding room) and asks the
scheduler to unload the models it picks, through the ``unload`` callback, so that every state
change still goes through the scheduler.

Two limits make room, in this order: ``scheduler.max_loaded_models`` (least recently used idle,
unpinned models go first; models of engines that do not run here, upstreams, neither count nor
make others go), then memory: the planner names the idle models whose measured memory would
cover the shortfall (``Decision.evictable_models``), they are unloaded, and the model is planned
again. A load that still does not fit fails with InsufficientMemory (or EngineUnavailable when no
engine can run it here). The caller holds the scheduler's room lock across ``make_room`` and its
own bookkeeping, so two loads never plan against the same free memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.engines import engine_kind
from ocrd.core.slots import Slot, is_idle
from ocrd.core.wishes import ModelWishes
from ocrd.errors import CapacityExhausted, EngineUnavailable, InsufficientMemory, OcrdError
from ocrd.events import ModelState
from ocrd.planning.gpu import GpuProbe, unavailable
from ocrd.planning.host_view import host_view
from ocrd.planning.planner import Decision, LoadedModel, gib, plan
from ocrd.runners.base import WarmRunnerInfo

Unload = Callable[[Slot, str], Awaitable[None]]

log = logging.getLogger("ocrd.core.scheduler")


class Placement:
    def __init__(self, models: ModelDirectory, gpu: GpuProbe, slots: Mapping[str, Slot],
                 settings: Callable[[], Settings], unload: Unload,
                 warm_runners: Callable[[], Sequence[WarmRunnerInfo]] = tuple):
        self._models = models
        self._gpu = gpu
        self._slots = slots
        self._settings = settings  # read at each use: SIGHUP replaces the settings
        self._unload = unload
        self._warm_runners = warm_runners

    async def plan(self, slot: Slot, wishes: ModelWishes | None = None,
                   placed: Sequence[Decision] = ()) -> Decision:
        """The planner's decision for ``slot`` now, with its wishes unless others are given;
        ``placed``: replicas of it already planned, whose memory counts as promised.
        Blocking work (NVML, safetensors headers) runs in worker threads."""
        model = wishes or slot.wishes
        if any(engine_kind(engine).uses_gpu for engine in model.entry.engines):
            snapshot = await self._gpu.snapshot_async()
            size = await asyncio.to_thread(self._models.size_facts, model)
        else:
            snapshot, size = unavailable("not needed by the builtin engine"), None
        host = host_view(self._settings(), snapshot, self._slots.values(), slot, self._models.availability,
                         self._warm_runners())
        if placed:
            host = dataclasses.replace(host, loaded=host.loaded + tuple(
                LoadedModel(slot.entry.id, d.device, 0, evictable=False, promised_bytes=d.estimated_bytes)
                for d in placed))
        return plan(model.entry, size, host, model.preference())

    async def replica_decisions(self, slot: Slot, first: Decision, count: int) -> tuple[Decision, ...]:
        """Where each of ``count`` replicas goes, ``first`` being the first's. On the CPU all go
        where it goes (RAM is not planned, as for one runner); on GPUs each is planned with the
        ones before it counted, so that they spread over the GPUs with room. Replicas that do not
        fit with the first's engine and quantization on a GPU are left out, with a warning."""
        if count <= 1 or not first.device.startswith("cuda"):
            return (first,) * max(1, count)
        decisions = [first]
        while len(decisions) < count:
            planned = await self.plan(slot, placed=decisions)
            same = (planned.engine, planned.quantization) == (first.engine, first.quantization)
            if not (planned.fits and same and planned.device.startswith("cuda")):
                log.warning("%s: %d of %d replicas fit on the GPUs (%s)", slot.entry.id, len(decisions),
                            count, planned.reasons[0] if planned.reasons else "no room")
                break
            decisions.append(planned)
        return tuple(decisions)

    async def make_room(self, slot: Slot) -> Decision:
        """The decision to load ``slot`` with, after evicting what it needs evicted: idle models
        beyond max_loaded_models, then idle models whose memory it needs. Raises when it still
        does not fit."""
        await self._make_count_room(slot)
        decision = await self.plan(slot)
        if not decision.fits and decision.evictable_models:
            for name in decision.evictable_models:
                victim = self._slots[name]
                if victim.state == ModelState.READY and is_idle(victim) and not victim.pinned:
                    await self._unload(victim, f"evicted to make room for {slot.entry.id} "
                                               f"({gib(decision.estimated_bytes)} on {decision.device})")
            decision = await self.plan(slot)
        if not decision.fits:
            raise does_not_fit(slot.entry.id, decision)
        return decision

    async def _make_count_room(self, slot: Slot) -> None:
        """Evicts least-recently-used idle models while max_loaded_models would be exceeded."""
        # An upstream holds nothing on this host: it neither counts nor makes others go.
        limit = self._settings().scheduler.max_loaded_models if _runs_here(slot) else 0
        while limit:
            occupied = [s for s in self._slots.values()
                        if s.holds_room and s is not slot and _runs_here(s)]
            if len(occupied) < limit:
                break
            # Only READY models can go: a loading one is about to be used.
            idle = [s for s in occupied
                    if s.state == ModelState.READY and is_idle(s) and not s.pinned]
            if not idle:
                busy = ", ".join(s.entry.id for s in occupied)
                raise CapacityExhausted(
                    f"cannot load {slot.entry.id!r}: {limit} models are loaded "
                    f"(max_loaded_models) and none is idle and unpinned ({busy}); "
                    f"unload one with `ocrctl unload MODEL`"
                )
            victim = min(idle, key=lambda s: s.last_used or 0.0)
            await self._unload(victim, f"evicted to make room for {slot.entry.id}")


def _runs_here(slot: Slot) -> bool:
    return engine_kind(slot.engine).runs_here


def does_not_fit(model: str, decision: Decision) -> OcrdError:
    """The load's error: InsufficientMemory when memory is missing, else the engine's absence."""
    if decision.shortfall_bytes > 0:
        # What is missing, then what to unload (the planner's first two reasons).
        return InsufficientMemory(f"cannot load {model}: {'; '.join(decision.reasons[:2])}")
    return EngineUnavailable(f"cannot load {model}: {decision.reasons[0]}")
