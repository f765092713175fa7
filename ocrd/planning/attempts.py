"""The planner's attempts: each way an engine that may use a GPU could run a model, with its figures.

``engine_attempts`` lists, for one engine, every (device, quantization) it may use, best first,
each with the memory it needs and the memory usable there (``ocrd.planning.estimates``); the
planner (``ocrd.planning.planner``) picks the first that fits, or explains what is missing. Each
such engine has its own function in ``_ATTEMPTS``: what differs in how they are placed (vLLM takes
a share of one GPU; transformers may quantize, and falls back to the CPU) lives there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ocrd.catalog import CatalogEntry
from ocrd.core.engines import QUANTIZATIONS
from ocrd.planning.estimates import (
    QUANT_WORDS,
    gib,
    transformers_estimate,
    utilization,
    vllm_estimate,
    vllm_max_model_len,
)
from ocrd.planning.inputs import Gpu, Host, Preference
from ocrd.planning.model_size import SizeFacts


@dataclass
class Attempt:
    """One engine tried on one device: fits, or how much is missing."""

    engine: str
    device: str
    quantization: str
    needed: int
    usable: int
    gpu: Gpu | None = None
    utilization: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.needed <= self.usable

    @property
    def shortfall(self) -> int:
        return max(0, self.needed - self.usable)


def engine_attempts(engine: str, entry: CatalogEntry, size: SizeFacts | None, host: Host,
                    preference: Preference, notes: list[str]) -> list[Attempt]:
    """Every (device, quantization) ``engine`` may use, best first, each with its figures; none
    (and a note saying why) when a device setting rules the engine out."""
    device = preference.device
    gpus, why_none = _gpus_for(device, host, preference)
    if device and device.startswith("cuda") and not gpus:
        notes.append(f"{engine} not used: {why_none}")  # never a silent move to the CPU
        return []
    return _ATTEMPTS[engine](entry, size, host, preference, gpus, why_none, notes)


def _vllm_attempts(entry: CatalogEntry, size: SizeFacts | None, host: Host, preference: Preference,
                   gpus: list[Gpu], why_none: str, notes: list[str]) -> list[Attempt]:
    device = preference.device
    if host.vllm_device == "cpu":
        if device and device.startswith("cuda"):
            notes.append(f"vLLM not used: vllm.device is cpu (a CPU build of vLLM), but "
                         f"{preference.device_from or 'the device setting'} asks for {device}")
            return []
        return [_vllm_cpu_attempt(entry)]
    if not gpus:
        notes.append(f"vLLM not used: it needs an NVIDIA GPU ({why_none})")
        return []
    return [_vllm_attempt(entry, size, gpu, host, preference) for gpu in gpus]


def _transformers_attempts(entry: CatalogEntry, size: SizeFacts | None, host: Host,
                           preference: Preference, gpus: list[Gpu], why_none: str,
                           notes: list[str]) -> list[Attempt]:
    if not gpus:
        return [_cpu_attempt(entry, size, preference, why_none)]
    return [_transformers_attempt(entry, size, gpu, host, preference, quantization)
            for gpu in gpus for quantization in _quantizations(size, preference)]


def _gpus_for(device: str | None, host: Host, preference: Preference) -> tuple[list[Gpu], str]:
    """Allowed GPUs, most usable memory first; a device setting narrows them."""
    setting = preference.device_from or "the device setting"
    if device == "cpu":
        return [], f"{setting} is cpu"
    gpus = sorted(host.gpus, key=lambda gpu: -_usable(gpu, host))
    if device and device != "cuda":
        gpus = [gpu for gpu in gpus if gpu.device == device]
    if not gpus and device:
        return [], (f"{setting} asks for {device}, which is not among the GPUs ocrd may use "
                    f"({host.no_gpu_reason if not host.gpus else 'see gpu.devices and CUDA_VISIBLE_DEVICES'})")
    return gpus, f"no GPU to use: {host.no_gpu_reason}" if not gpus else ""


def _quantizations(size: SizeFacts | None, preference: Preference) -> list[str]:
    if preference.quantization is not None:
        return [preference.quantization]
    if size is None or size.prequantized:
        return ["none"]
    return list(QUANTIZATIONS)


def _usable(gpu: Gpu, host: Host) -> int:
    promised = sum(m.promised_bytes for m in host.loaded if m.device == gpu.device)
    return gpu.free - host.reserve_bytes - promised


def _max_new_tokens(entry: CatalogEntry, preference: Preference) -> int:
    # The runner's generate() default: the entry's max_tokens wins over transformers.max_new_tokens.
    tokens = entry.sampling.get("max_tokens")
    return int(tokens) if isinstance(tokens, int) and tokens > 0 else preference.max_new_tokens


def _transformers_attempt(entry: CatalogEntry, size: SizeFacts | None, gpu: Gpu, host: Host,
                          preference: Preference, quantization: str) -> Attempt:
    # A warm transformers runner on this GPU becomes this model's runner: the CUDA context NVML
    # counts as used for it is the one the estimate counts again.
    warm = max((w.memory_bytes for w in host.warm if w.engine == "transformers" and w.device == gpu.device),
               default=0)
    usable = _usable(gpu, host) + warm
    if size is None:
        return Attempt("transformers", gpu.device, quantization, 0, usable, gpu, reasons=[
            f"{entry.id}'s size is unknown (no safetensors headers, not in the catalog): ocrd "
            "cannot check that it fits"])
    estimate = transformers_estimate(size, quantization, on_gpu=True, dtype=preference.dtype,
                                     max_new_tokens=_max_new_tokens(entry, preference))
    attempt = Attempt("transformers", gpu.device, quantization, estimate.total, usable, gpu)
    attempt.reasons.append(f"estimate: {estimate.describe()}; sizes from {size.source}")
    if warm:
        attempt.reasons.append(f"the warm transformers runner on {gpu.device} takes it: its "
                               f"{warm / 2**20:.0f} MiB count as free")
    return attempt


def _cpu_attempt(entry: CatalogEntry, size: SizeFacts | None, preference: Preference, why: str) -> Attempt:
    explicit = preference.quantization is not None
    quantization = preference.quantization or "none"
    reasons = [f"transformers on the CPU, {QUANT_WORDS[quantization]}: {why}"]
    if not explicit:
        reasons.append("unquantized on the CPU: bitsandbytes' CPU kernels are slower than float32 "
                       "and RAM is rarely the limit (ask for --quant 8bit to save RAM)")
    needed = 0
    if size is not None:
        estimate = transformers_estimate(size, quantization, on_gpu=False, dtype=preference.dtype,
                                         max_new_tokens=_max_new_tokens(entry, preference))
        needed = estimate.total
        reasons.append(f"estimate in RAM: {estimate.describe()}; sizes from {size.source}")
    # RAM is not planned: the CPU always "fits"; the kernel's OOM killer is the limit.
    return Attempt("transformers", "cpu", quantization, needed, needed, None, reasons=reasons)


def _vllm_attempt(entry: CatalogEntry, size: SizeFacts | None, gpu: Gpu, host: Host,
                  preference: Preference) -> Attempt:
    usable = _usable(gpu, host)
    fixed = preference.gpu_memory_utilization
    if size is None and fixed is None:
        return Attempt("vllm", gpu.device, "none", gpu.total, usable, gpu, reasons=[
            f"{entry.id}'s size is unknown: vLLM would need the whole GPU"])
    reasons = []
    estimated = None
    if size is not None:
        estimate = vllm_estimate(size, vllm_max_model_len(entry, preference.vllm_args))
        estimated = utilization(estimate.total, gpu.total)
        reasons.append(f"estimate: {estimate.describe()}; sizes from {size.source}")
    if fixed is None:
        assert estimated is not None  # the size is known: an unknown one without a share returned above
        share = estimated
        reasons.append(f"gpu_memory_utilization {share:.2f}: {gib(share * gpu.total)} of the GPU's "
                       f"{gib(gpu.total)} (needed / total, rounded up to 0.01)")
    else:
        share = fixed
        ours = f"; ocrd's estimate is {estimated:.2f}" if estimated is not None else ""
        reasons.append(f"gpu_memory_utilization {share:.2f} from {preference.gpu_memory_utilization_from}: "
                       f"{gib(share * gpu.total)} of the GPU's {gib(gpu.total)}{ours}")
        if estimated is not None and share < estimated:
            reasons.append("that is less than ocrd's estimate: vLLM may refuse to start, with too "
                           "little memory left for its KV cache")
    # vLLM takes utilization x total, the rounding included.
    return Attempt("vllm", gpu.device, "none", round(share * gpu.total), usable, gpu, share, reasons=reasons)


def _vllm_cpu_attempt(entry: CatalogEntry) -> Attempt:
    # RAM is not planned (as for transformers on the CPU); vLLM's CPU build sizes its KV cache
    # from VLLM_CPU_KVCACHE_SPACE, not from a share of a device.
    return Attempt("vllm", "cpu", "none", 0, 0, None, reasons=[
        f"vLLM on the CPU: vllm.device is cpu (a CPU build of vLLM), so {entry.id} gets no GPU "
        "and no GPU memory is planned (no gpu_memory_utilization)"])


# How each engine that may use a GPU (``EngineKind.uses_gpu``) is tried.
_ATTEMPTS: dict[str, Callable[[CatalogEntry, SizeFacts | None, Host, Preference, list[Gpu], str, list[str]],
                              list[Attempt]]] = {
    "transformers": _transformers_attempts,
    "vllm": _vllm_attempts,
}
