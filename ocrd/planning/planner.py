"""The planner: which engine, device and quantization a model gets, and why (pure functions).

``plan(entry, size, host, preference)`` turns explicit inputs — the catalog entry, the model's
size facts (``ocrd.planning.model_size``), the host (allowed GPUs with their free memory, what ocrd's loaded
models hold on them, which engines are available) and the preferences (config, per model, per
request) — into a ``Decision`` whose ``reasons`` say in plain words why, most important first. The
scheduler makes every load from the decision of the moment, and ``ocrctl mode explain`` prints it.

The policy:

* builtin models run on the CPU (no GPU memory involved);
* without a usable GPU, transformers runs on the CPU, unquantized (float32 unless
  ``transformers.dtype`` says otherwise); vLLM needs an NVIDIA GPU, unless ``vllm.device = "cpu"``
  (a CPU build of vLLM): then vLLM always runs on the CPU, with no GPU memory planned and no
  ``gpu_memory_utilization``;
* on a GPU, the catalog's engine order, skipping engines this host lacks and engines that do not
  fit; a forced engine (request, per-model ``engine``, ``planner.engine``) is the only candidate;
* for transformers the least quantization that fits (bf16, then 8-bit, then 4-bit) unless one is
  configured or asked for; on the allowed GPU with the most usable memory (free memory minus
  ``gpu.reserve_mib`` minus what loads in progress were promised);
* for vLLM, ``gpu_memory_utilization`` = needed / total rounded up to 0.01, never more than the
  usable share (recent vLLM refuses to start when utilization x total exceeds free memory, and
  instances on one GPU must add up, which free memory already accounts for);
* nothing fits: ``fits=False`` with the memory missing on the best device and the idle, unpinned
  models (least recently used first) whose unloading would cover it. An explicit choice that cannot
  fit says so; it is never silently switched to another engine or quantization.

The estimates are ``ocrd.planning.estimates``'s; the attempts of each engine that may use a GPU
(devices, quantizations, with their figures) ``ocrd.planning.attempts``'s. This module decides
among them and words the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ocrd.catalog import CatalogEntry
from ocrd.core.engines import engine_kind
from ocrd.planning.attempts import Attempt, engine_attempts
from ocrd.planning.estimates import (
    ACTIVATION_BYTES,
    BYTES_PER_WEIGHT,
    CUDA_CONTEXT_BYTES,
    DTYPE_BYTES,
    GIB,
    IMAGE_TOKENS,
    KV_UNKNOWN_BYTES,
    MIB,
    QUANT_WORDS,
    VLLM_ACTIVATION_BYTES,
    VLLM_CUDA_GRAPH_BYTES,
    VLLM_KV_UNKNOWN_BYTES,
    Estimate,
    gib,
    transformers_estimate,
    utilization,
    vllm_estimate,
    vllm_max_model_len,
)
from ocrd.planning.inputs import Gpu, Host, LoadedModel, Preference, WarmRunner, allowed_gpus
from ocrd.planning.model_size import SizeFacts

__all__ = [
    "ACTIVATION_BYTES", "BYTES_PER_WEIGHT", "CUDA_CONTEXT_BYTES", "DTYPE_BYTES", "GIB", "IMAGE_TOKENS",
    "KV_UNKNOWN_BYTES", "MIB", "QUANT_WORDS", "VLLM_ACTIVATION_BYTES", "VLLM_CUDA_GRAPH_BYTES",
    "VLLM_KV_UNKNOWN_BYTES", "Decision", "Estimate", "Gpu", "Host", "LoadedModel", "Preference", "WarmRunner",
    "allowed_gpus", "gib", "plan", "summary", "transformers_estimate", "utilization", "vllm_estimate",
    "vllm_max_model_len", "with_reason_first",
]


@dataclass(frozen=True)
class Decision:
    model: str                      # canonical id
    engine: str                     # "builtin" | "transformers" | "vllm" | "upstream"; "" when nothing fits
    device: str                     # "cpu" or "cuda:N" (N = NVML index of the planned GPU); an upstream's URL
    quantization: str               # "none" | "8bit" | "4bit"
    gpu_memory_utilization: float   # vLLM's share of the planned GPU; 0.0 for other engines
    estimated_bytes: int            # memory the model needs on `device`
    reasons: tuple[str, ...]        # plain words, most important first
    fits: bool
    shortfall_bytes: int = 0        # when not fits: memory missing on the best device
    evictable_models: tuple[str, ...] = ()  # when not fits: idle unpinned models whose unloading makes room
    gpu_uuid: str = ""              # UUID of the planned GPU ("" on cpu)


# --- the choice -----------------------------------------------------------------------------------


NO_PREFERENCE = Preference()


def plan(entry: CatalogEntry, size: SizeFacts | None, host: Host, preference: Preference = NO_PREFERENCE) -> Decision:
    """The decision for loading ``entry`` now (see the module doc for the policy)."""
    notes: list[str] = []
    engines = _candidate_engines(entry, preference, notes)
    attempts: list[Attempt] = []
    misses: list[str] = []  # engines tried before, that did not fit
    for engine in engines:
        placed = _PLACED.get(engine)
        if placed is not None:
            return placed(entry, notes)
        available = host.availability(engine)
        if not available.available:
            notes.append(f"{engine} not used: {available.reason}")
            continue
        tried = engine_attempts(engine, entry, size, host, preference, notes)
        fitting = next((a for a in tried if a.fits), None)
        if fitting is not None:
            # The better options it was chosen over (bf16 before 8-bit) on the same device.
            passed = [a for a in tried[:tried.index(fitting)] if a.device == fitting.device]
            return _fitting(entry, fitting, size, [*map(_miss, passed), *misses, *notes])
        if tried:
            misses.append(_miss(min(tried, key=lambda a: a.needed)))
        attempts += tried
    return _nothing_fits(entry, attempts, host, notes)


def _what(attempt: Attempt) -> str:
    """"vLLM", "transformers 8-bit": the engine, and its quantization where it quantizes."""
    kind = engine_kind(attempt.engine)
    return f"{kind.title} {QUANT_WORDS[attempt.quantization]}" if kind.quantizes else kind.title


def _miss(attempt: Attempt) -> str:
    return (f"{_what(attempt)} would need about {gib(attempt.needed)} on {attempt.device}, more "
            f"than the {gib(max(0, attempt.usable))} usable there")


def _candidate_engines(entry: CatalogEntry, preference: Preference, notes: list[str]) -> list[str]:
    wanted = preference.engine
    if wanted and wanted not in entry.engines:
        # Only planner.engine can get here (requests and [models.X] are checked before): the
        # global preference does not apply to a model that cannot run on that engine.
        notes.append(f"{preference.engine_from or 'the preference'} asks for {wanted}, but "
                     f"{entry.id} runs only on {', '.join(entry.engines)}")
        wanted = None
    if wanted:
        notes.append(f"the {wanted} engine is asked for ({preference.engine_from or 'preference'})")
        return [wanted]
    asked = preference.quantization
    quantizing = [engine for engine in entry.engines if engine_kind(engine).quantizes]
    if asked in ("8bit", "4bit") and quantizing:
        if entry.engines[0] not in quantizing:
            notes.append(f"{QUANT_WORDS[asked]} is asked for "
                         f"({preference.quantization_from or 'preference'}): only the "
                         f"{' or '.join(quantizing)} engine quantizes")
        return quantizing
    return list(entry.engines)


def _builtin(entry: CatalogEntry, notes: list[str]) -> Decision:
    reasons = [f"{entry.id} runs on ocrd's builtin OCR engine (ONNX or tesseract on the CPU); "
               "it needs no GPU memory", *notes]
    return Decision(entry.id, "builtin", "cpu", "none", 0.0, 0, tuple(reasons), True)


def _upstream(entry: CatalogEntry, notes: list[str]) -> Decision:
    url = entry.engine_options.get("upstream", {}).get("url", "")
    reasons = [f"{entry.id} is served by the upstream server at {url} ([[upstreams]] in the "
               "configuration): ocrd only routes requests to it, so it needs no memory or device "
               "here and is never evicted for memory", *notes]
    return Decision(entry.id, "upstream", url, "none", 0.0, 0, tuple(reasons), True)


# Engines that use no GPU (``EngineKind.uses_gpu`` false): placed without sizing or attempts.
_PLACED = {"builtin": _builtin, "upstream": _upstream}


def _fitting(entry: CatalogEntry, attempt: Attempt, size: SizeFacts | None, notes: list[str]) -> Decision:
    headline = _headline(entry, attempt)
    reasons = [*([headline] if headline else []), *attempt.reasons, *notes]
    if size is not None and size.prequantized:
        reasons.insert(1, f"its checkpoint is already quantized ({size.prequantized}): loaded as it is")
    return Decision(
        model=entry.id, engine=attempt.engine, device=attempt.device,
        quantization=attempt.quantization, gpu_memory_utilization=attempt.utilization,
        estimated_bytes=attempt.needed, reasons=tuple(reasons), fits=True,
        gpu_uuid=attempt.gpu.uuid if attempt.gpu else "",
    )


def _headline(entry: CatalogEntry, attempt: Attempt) -> str:
    if attempt.gpu is None:
        return ""  # the CPU attempt's own first reason says it
    where = (f"{attempt.device} ({attempt.gpu.name}), which has {gib(attempt.usable)} usable, "
             f"the most of the GPUs ocrd may use")
    # An engine whose options are its quantizations names that; another, its rank in the catalog.
    quantizes = engine_kind(attempt.engine).quantizes
    first = not quantizes and entry.engines[0] == attempt.engine
    ranked = ", the first engine in the catalog's order," if first else ""
    return f"{_what(attempt)}{ranked} fits: it needs about {gib(attempt.needed)} on {where}"


def _nothing_fits(entry: CatalogEntry, attempts: list[Attempt], host: Host, notes: list[str]) -> Decision:
    if not attempts:
        refusals = [note for note in notes if " not used: " in note]
        why = f": {'; '.join(refusals)}" if refusals else ""
        reasons = [f"no engine can run {entry.id} on this host{why}",
                   *(note for note in notes if note not in refusals)]
        return Decision(entry.id, "", "cpu", "none", 0.0, 0, tuple(reasons), False)
    # The smallest option of each engine and device is the one to make room for.
    smallest: dict[tuple[str, str], Attempt] = {}
    for attempt in attempts:
        key = (attempt.engine, attempt.device)
        if key not in smallest or attempt.needed < smallest[key].needed:
            smallest[key] = attempt
    options = [(a, _evictable(a, host)) for a in smallest.values()]
    # First (catalog order, most usable memory) whose eviction makes room; else the least missing.
    best, evict = next(((a, e) for a, e in options if e), min(options, key=lambda o: o[0].shortfall))
    words = f", {QUANT_WORDS[best.quantization]}" if engine_kind(best.engine).quantizes else ""
    headline = (f"does not fit: {best.engine}{words} needs about {gib(best.needed)} on "
                f"{best.device} but only {gib(max(0, best.usable))} is usable there; "
                f"{gib(best.shortfall)} is missing")
    reasons = [headline, _room_advice(best, evict, host), *best.reasons,
               *(_miss(a) for a, _ in options if a is not best), *notes]
    return Decision(
        model=entry.id, engine="", device=best.device, quantization=best.quantization,
        gpu_memory_utilization=best.utilization, estimated_bytes=best.needed,
        reasons=tuple(reasons), fits=False, shortfall_bytes=best.shortfall,
        evictable_models=tuple(evict), gpu_uuid=best.gpu.uuid if best.gpu else "",
    )


def _evictable(attempt: Attempt, host: Host) -> list[str]:
    """Idle unpinned models on the attempt's device, least recently used first, whose measured
    memory covers the shortfall; empty when all of them would not be enough."""
    idle = sorted((m for m in host.loaded if m.device == attempt.device and m.evictable),
                  key=lambda m: m.last_used)
    chosen, freed = [], 0
    for model in idle:
        if freed >= attempt.shortfall:
            break
        chosen.append(model.model)
        freed += model.memory_bytes
    return chosen if chosen and freed >= attempt.shortfall else []


def _room_advice(attempt: Attempt, evict: list[str], host: Host) -> str:
    if evict:
        sizes = {m.model: m.memory_bytes for m in host.loaded}
        listed = ", ".join(f"{name} ({gib(sizes[name])})" for name in evict)
        return f"unloading the idle model(s) {listed} would make room"
    held = [m for m in host.loaded if m.device == attempt.device]
    if held:
        listed = ", ".join(f"{m.model} ({gib(m.memory_bytes)}{'' if m.evictable else ', busy or pinned'})"
                           for m in held)
        return (f"ocrd's models on {attempt.device}: {listed}; unloading the idle ones is not "
                f"enough: free memory used by other processes, or choose a smaller model")
    return (f"no model of ocrd's is on {attempt.device}: free memory used by other processes "
            f"(`ocrctl gpu` shows them), or choose a smaller model or a quantization")


def summary(decision: Decision) -> str:
    """"transformers on cuda:0, 8-bit, about 3.9 GiB": the decision in one line."""
    if decision.engine and not engine_kind(decision.engine).runs_here:
        return f"{decision.engine} at {decision.device}"  # an upstream's URL
    if decision.engine == "vllm" and decision.device == "cpu":
        how = "no GPU"
    elif decision.engine == "vllm":
        how = f"gpu_memory_utilization {decision.gpu_memory_utilization:.2f}"
    else:
        how = QUANT_WORDS[decision.quantization]
    size = f", about {gib(decision.estimated_bytes)}" if decision.estimated_bytes else ""
    return f"{decision.engine or 'nothing'} on {decision.device}, {how}{size}"


def with_reason_first(decision: Decision, reason: str) -> Decision:
    """The decision with ``reason`` put before its own (e.g. "already loaded")."""
    return replace(decision, reasons=(reason, *decision.reasons))
