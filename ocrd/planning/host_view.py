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
    loaded = [model for slot in slots
              if slot is not planning and slot.decision is not None
              and slot.state in (ModelState.READY, ModelState.LOADING)
              for model in _loaded(slot, used)]
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


def _loaded(slot: Slot, used: dict[tuple[str, int], int]) -> list[LoadedModel]:
    """One entry per runner process of the model (``[models.X] replicas``), on its device."""
    decision = slot.decision
    assert decision is not None
    loading = slot.state == ModelState.LOADING
    evictable = not loading and is_idle(slot) and not slot.pinned
    if slot.runner is None or loading:
        # A load in progress holds little yet: count what each replica was planned for.
        return [LoadedModel(model=slot.entry.id, device=planned.device, memory_bytes=0, evictable=False,
                            last_used=slot.last_used or 0.0, promised_bytes=planned.estimated_bytes)
                for planned in (slot.replica_decisions or (decision,))]
    models = []
    for replica in slot.runner.replicas():
        device = replica.spec.device if replica.spec.device.startswith("cuda") else decision.device
        measured = used.get((device, replica.pid), replica.memory_bytes) if replica.pid else 0
        models.append(LoadedModel(model=slot.entry.id, device=device, memory_bytes=measured,
                                  evictable=evictable, last_used=slot.last_used or 0.0))
    return models
