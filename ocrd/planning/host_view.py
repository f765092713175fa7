"""The host as the planner sees it, from a GPU snapshot and the scheduler's slots.

The planner is pure; this is where the running daemon's facts become its ``Host``: the GPUs ocrd
may use (``gpu.devices`` within what ``CUDA_VISIBLE_DEVICES`` leaves), which engines are available,
the memory ``gpu.reserve_mib`` keeps free, and every model ocrd holds or is loading, with its
measured memory: NVML's figure for the runner's process on a GPU (what it really holds, CUDA
context included), else the runner's own figure (RSS on the CPU). Warm runners
(``scheduler.warm_runners``) are there too, measured the same way: NVML already counts a warm
runner's CUDA context as used, and the planner gives it back to a load that will take it over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ocrd.config.settings import Settings
from ocrd.core.slots import Slot, is_idle
from ocrd.events import ModelState
from ocrd.planning.availability import Availability
from ocrd.planning.gpu import GpuSnapshot
from ocrd.planning.planner import Host, LoadedModel, WarmRunner, allowed_gpus
from ocrd.runners.base import WarmRunnerInfo


def host_view(settings: Settings, snapshot: GpuSnapshot, slots: Iterable[Slot], planning: Slot | None,
              availability: Callable[[str], Availability],
              warm: Iterable[WarmRunnerInfo] = ()) -> Host:
    """The planner's ``Host`` now; ``planning`` (the slot being planned for) is left out;
    ``availability`` answers which engines this host can run (``ModelDirectory.availability``)."""
    gpus, why = allowed_gpus(snapshot, settings.gpu.devices)
    used = {(f"cuda:{d.index}", p.pid): p.used_bytes for d in snapshot.devices for p in d.processes}
    loaded = [_loaded(slot, used) for slot in slots
              if slot is not planning and slot.decision is not None
              and slot.state in (ModelState.READY, ModelState.LOADING)]
    return Host(
        gpus=gpus, no_gpu_reason=why,
        transformers=availability("transformers"),
        vllm=availability("vllm"),
        vllm_device=settings.vllm.device,
        reserve_bytes=settings.gpu.reserve_mib * 2**20,
        loaded=tuple(loaded),
        warm=tuple(WarmRunner(w.engine, w.device, used.get((w.device, w.pid), w.memory_bytes))
                   for w in warm),
    )


def _loaded(slot: Slot, used: dict[tuple[str, int], int]) -> LoadedModel:
    decision = slot.decision
    assert decision is not None
    runner = slot.runner
    measured = 0
    if runner is not None and runner.pid:
        measured = used.get((decision.device, runner.pid), runner.memory_bytes)
    loading = slot.state == ModelState.LOADING
    return LoadedModel(
        model=slot.entry.id, device=decision.device, memory_bytes=measured,
        evictable=not loading and is_idle(slot) and not slot.pinned,
        last_used=slot.last_used or 0.0,
        # A load in progress holds little yet: count what it was planned for.
        promised_bytes=max(0, decision.estimated_bytes - measured) if loading else 0,
    )
