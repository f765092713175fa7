"""The planner's inputs: the GPUs ocrd may use, the models it holds, the host, the preferences.

``ocrd.planning.host_view`` builds a ``Host`` from the running daemon's facts and
``ocrd.core.wishes`` a ``Preference`` from the configuration and the request; tests state them
outright.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ocrd.planning.availability import Availability
from ocrd.planning.estimates import MIB
from ocrd.planning.gpu import GpuSnapshot


@dataclass(frozen=True)
class Gpu:
    """One GPU ocrd may use, as NVML saw it a moment ago."""

    index: int  # NVML's index
    uuid: str
    name: str
    total: int
    free: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class LoadedModel:
    """A model ocrd holds (or is loading) now, with its measured memory."""

    model: str
    device: str  # "cpu" / "cuda:N"
    memory_bytes: int  # measured: NVML per process on a GPU, else the runner's own figure
    evictable: bool  # ready, idle and unpinned: eviction may unload it
    last_used: float = 0.0  # for least-recently-used order
    # A load in progress: memory it was planned for but NVML does not show yet.
    promised_bytes: int = 0


@dataclass(frozen=True)
class WarmRunner:
    """A warm runner waiting for a model (``scheduler.warm_runners``), with its measured memory
    (NVML per process on a GPU: its CUDA context; else its RSS)."""

    engine: str
    device: str
    memory_bytes: int


@dataclass(frozen=True)
class Host:
    gpus: tuple[Gpu, ...] = ()
    no_gpu_reason: str = "this host has no NVIDIA GPU"  # why ``gpus`` is empty
    transformers: Availability = Availability(True)
    vllm: Availability = Availability(False, "vLLM is not available")
    vllm_device: str = "cuda"  # vllm.device: "cpu" for a CPU build of vLLM
    reserve_bytes: int = 512 * MIB  # gpu.reserve_mib
    loaded: tuple[LoadedModel, ...] = ()
    warm: tuple[WarmRunner, ...] = ()

    def availability(self, engine: str) -> Availability:
        """Whether ``engine`` can run here: the answer of its probe for the engines that may be
        missing (``EngineKind.optional``), else always."""
        probed = {"transformers": self.transformers, "vllm": self.vllm}
        return probed.get(engine, Availability(True))


@dataclass(frozen=True)
class Preference:
    """What the configuration and the request ask for; None leaves the choice to the planner
    ("auto" never gets here: ``ocrd.core.wishes`` resolves it). The ``*_from`` fields name the
    source, for the reasons ("ocrctl --mode", "planner.engine")."""

    engine: str | None = None
    engine_from: str = ""
    quantization: str | None = None
    quantization_from: str = ""
    device: str | None = None  # "cpu", "cuda" or "cuda:N"; None: the planner's choice
    device_from: str = ""
    dtype: str = "auto"  # transformers.dtype
    max_new_tokens: int = 4096  # transformers.max_new_tokens (the entry's max_tokens wins)
    vllm_args: tuple[str, ...] = ()  # vllm.args then [models.X] vllm_args, after the catalog's
    # [models.X] gpu_memory_utilization: vLLM's share fixed by the user instead of estimated.
    gpu_memory_utilization: float | None = None
    gpu_memory_utilization_from: str = ""


def allowed_gpus(snapshot: GpuSnapshot, devices: Sequence[str] = ()) -> tuple[tuple[Gpu, ...], str]:
    """The GPUs of ``snapshot`` (already limited by CUDA_VISIBLE_DEVICES) that ``gpu.devices``
    allows (NVML indices, UUIDs or unique UUID prefixes; empty: all), and why none when none."""
    if not snapshot.available:
        return (), snapshot.reason or "NVML reports no GPU"
    gpus = [Gpu(d.index, d.uuid, d.name, d.total, d.free) for d in snapshot.devices]
    if devices:
        gpus = [gpu for gpu in gpus if any(_names(entry, gpu, gpus) for entry in devices)]
        if not gpus:
            return (), f"gpu.devices = {list(devices)} names none of the visible GPUs"
    return tuple(gpus), ""


def _names(entry: str, gpu: Gpu, gpus: list[Gpu]) -> bool:
    entry = entry.strip()
    if entry.isdigit():
        return int(entry) == gpu.index
    return bool(entry) and gpu.uuid.startswith(entry) and sum(g.uuid.startswith(entry) for g in gpus) == 1
