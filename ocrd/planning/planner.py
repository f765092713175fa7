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

The estimates (see docs/planner.md for the figures and the seed comparison):

* transformers on a GPU: 16-bit kept parameters (vision side, embeddings, output head, norms) x 2
  bytes + the language model's linear weights x (2 | 1 | 0.5625) bytes for (none | 8bit | 4bit)
  + CUDA context + activations for one page image + the KV cache for the image and
  ``max_new_tokens``; on the CPU float32 (4 bytes) and no CUDA context;
* vLLM: bf16 weights + the KV cache for ``--max-model-len`` (the catalog's, else the model's own
  context length) + vLLM's profiled activations + CUDA graphs + CUDA context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ocrd.catalog import CatalogEntry
from ocrd.planning.availability import Availability
from ocrd.planning.gpu import GpuSnapshot
from ocrd.planning.model_size import SizeFacts

MIB = 2**20
GIB = 2**30

# CUDA context, cuBLAS workspace and kernels: what NVML counts for a runner beyond torch's
# allocator; measured 0.72 GiB on an H100 (NVML's figure minus torch's peak reservation).
CUDA_CONTEXT_BYTES = 768 * MIB
# Activations of one request (the vision encoder on a page image, the prompt's prefill) plus the
# caching allocator's slack. Measured on an H100 (torch 2.11, transformers 5.17, bf16 Qwen2-VL-2B
# and -7B, one 1,296-token image and 512 new tokens): peak allocated minus weights 0.44 GiB (KV
# included), reserved minus allocated 0.37 GiB; so 1 GiB for a page of up to ~2k image tokens.
ACTIVATION_BYTES = 1 * GIB
# Image tokens of one page: ~1.6 megapixels at Qwen2-VL's 28 x 28 px per token (the runner serves
# one request at a time, so the KV cache holds one sequence).
IMAGE_TOKENS = 2048
# KV cache allowance when config.json is not at hand (model not downloaded).
KV_UNKNOWN_BYTES = 1 * GIB
# Bytes per quantized weight. bitsandbytes int8 keeps one byte per weight plus one float per output
# row (negligible); NF4 packs two weights per byte plus one float32 absmax per 64-weight block
# (bnb_4bit_use_double_quant is off in ocrd's runner): 0.5 + 4/64.
BYTES_PER_WEIGHT = {"none": 2.0, "8bit": 1.0, "4bit": 0.5 + 4 / 64}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# vLLM's start-up profile: a dummy batch of max_num_batched_tokens plus the largest image the
# multimodal limits allow; 1-2 GiB for the catalog's small VLMs, so 1.5 GiB.
VLLM_ACTIVATION_BYTES = 1536 * MIB
# CUDA graphs captured for decode batch sizes (vLLM logs "took 0.2-0.6 GiB" for small models).
VLLM_CUDA_GRAPH_BYTES = 512 * MIB
# KV cache allowance for vLLM when config.json is not at hand.
VLLM_KV_UNKNOWN_BYTES = 2 * GIB
QUANTIZATIONS = ("none", "8bit", "4bit")
QUANT_WORDS = {"none": "unquantized", "8bit": "8-bit", "4bit": "4-bit"}


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


# --- inputs ---------------------------------------------------------------------------------------


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
class Host:
    gpus: tuple[Gpu, ...] = ()
    no_gpu_reason: str = "this host has no NVIDIA GPU"  # why ``gpus`` is empty
    transformers: Availability = Availability(True)
    vllm: Availability = Availability(False, "vLLM is not available")
    vllm_device: str = "cuda"  # vllm.device: "cpu" for a CPU build of vLLM
    reserve_bytes: int = 512 * MIB  # gpu.reserve_mib
    loaded: tuple[LoadedModel, ...] = ()


@dataclass(frozen=True)
class Preference:
    """What the configuration and the request ask for; None leaves the choice to the planner.
    The ``*_from`` fields name the source, for the reasons ("ocrctl --mode", "planner.engine")."""

    engine: str | None = None
    engine_from: str = ""
    quantization: str | None = None
    quantization_from: str = ""
    device: str | None = None  # "cpu", "cuda" or "cuda:N"; None or "auto": the planner's choice
    device_from: str = ""
    dtype: str = "auto"  # transformers.dtype
    max_new_tokens: int = 4096  # transformers.max_new_tokens (the entry's max_tokens wins)
    vllm_args: tuple[str, ...] = ()  # vllm.args then [models.X] vllm_args, after the catalog's
    # [models.X] gpu_memory_utilization: vLLM's share fixed by the user instead of estimated.
    gpu_memory_utilization: float | None = None
    gpu_memory_utilization_from: str = ""


# --- estimates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    total: int
    weights: int
    parts: tuple[tuple[str, int], ...]  # (what, bytes) after the weights, for the reasons

    def describe(self) -> str:
        extra = "".join(f" + {gib(size)} {what}" for what, size in self.parts)
        return f"{gib(self.weights)} weights{extra}"


def transformers_estimate(size: SizeFacts, quantization: str, *, on_gpu: bool, dtype: str = "auto",
                          max_new_tokens: int = 4096) -> Estimate:
    """Memory a transformers runner needs: on the GPU (on_gpu) or in RAM."""
    value_bytes = DTYPE_BYTES.get(dtype, 2 if on_gpu else 4)
    if size.prequantized:
        weights = size.checkpoint_bytes  # loaded as stored; ocrd does not quantize it again
    else:
        per_weight = value_bytes if quantization == "none" else BYTES_PER_WEIGHT[quantization]
        weights = round(size.kept_params * value_bytes + size.quantizable_params * per_weight)
    tokens = IMAGE_TOKENS + max_new_tokens
    if size.kv_bytes_per_token:
        kv = (f"KV cache for {tokens:,} tokens", size.kv_bytes_per_token * tokens * value_bytes // 2)
    else:
        kv = ("KV cache allowance", KV_UNKNOWN_BYTES)
    parts = [("CUDA context", CUDA_CONTEXT_BYTES)] if on_gpu else []
    parts += [("activations", ACTIVATION_BYTES), kv]
    return Estimate(weights + sum(b for _, b in parts), weights, tuple(parts))


def vllm_estimate(size: SizeFacts, max_model_len: int | None) -> Estimate:
    """Memory a vLLM instance needs on its GPU: bf16 weights, one full-length sequence of KV cache
    (vLLM refuses to start without it), its profiled activations and CUDA graphs."""
    weights = size.checkpoint_bytes if size.prequantized else size.total_params * 2
    context = max_model_len or size.max_position_embeddings
    if size.kv_bytes_per_token and context:
        kv = (f"KV cache for {context:,} tokens (max-model-len)", size.kv_bytes_per_token * context)
    else:
        kv = ("KV cache allowance", VLLM_KV_UNKNOWN_BYTES)
    parts = (kv, ("activations (vLLM's profile run)", VLLM_ACTIVATION_BYTES),
             ("CUDA graphs", VLLM_CUDA_GRAPH_BYTES), ("CUDA context", CUDA_CONTEXT_BYTES))
    return Estimate(weights + sum(b for _, b in parts), weights, parts)


def vllm_max_model_len(entry: CatalogEntry, extra_args: tuple[str, ...] = ()) -> int | None:
    """``--max-model-len`` of the server's arguments (the catalog's, then ``extra_args``), if they
    set one: the last one given, as vLLM's argument parser takes it."""
    args = [*(entry.vllm.args if entry.vllm else ()), *extra_args]
    found = None
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if flag not in ("--max-model-len", "--max_model_len"):
            continue
        if not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        if value.isdigit():
            found = int(value)
    return found


def utilization(needed: int, total: int) -> float:
    """vLLM's ``--gpu-memory-utilization`` for ``needed`` bytes: rounded up to 0.01."""
    return math.ceil(needed / total * 100 - 1e-9) / 100


def gib(size: int | float) -> str:
    return f"{size / GIB:.1f} GiB"


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


# --- the choice -----------------------------------------------------------------------------------


@dataclass
class _Attempt:
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


def plan(entry: CatalogEntry, size: SizeFacts | None, host: Host, preference: Preference = Preference()) -> Decision:
    """The decision for loading ``entry`` now (see the module doc for the policy)."""
    notes: list[str] = []
    engines = _candidate_engines(entry, preference, notes)
    attempts: list[_Attempt] = []
    misses: list[str] = []  # engines tried before, that did not fit
    for engine in engines:
        if engine == "builtin":
            return _builtin(entry, notes)
        if engine == "upstream":
            return _upstream(entry, notes)
        available = host.vllm if engine == "vllm" else host.transformers
        if not available.available:
            notes.append(f"{engine} not used: {available.reason}")
            continue
        tried = _try_engine(engine, entry, size, host, preference, notes)
        fitting = next((a for a in tried if a.fits), None)
        if fitting is not None:
            # The better options it was chosen over (bf16 before 8-bit) on the same device.
            passed = [a for a in tried[:tried.index(fitting)] if a.device == fitting.device]
            return _fitting(entry, fitting, size, [*map(_miss, passed), *misses, *notes])
        if tried:
            misses.append(_miss(min(tried, key=lambda a: a.needed)))
        attempts += tried
    return _nothing_fits(entry, attempts, host, notes)


def _miss(attempt: _Attempt) -> str:
    what = "vLLM" if attempt.engine == "vllm" else f"transformers {QUANT_WORDS[attempt.quantization]}"
    return (f"{what} would need about {gib(attempt.needed)} on {attempt.device}, more than the "
            f"{gib(max(0, attempt.usable))} usable there")


def _candidate_engines(entry: CatalogEntry, preference: Preference, notes: list[str]) -> list[str]:
    wanted = preference.engine if preference.engine not in (None, "", "auto") else None
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
    if asked in ("8bit", "4bit") and "transformers" in entry.engines:
        if entry.engines[0] != "transformers":
            notes.append(f"{QUANT_WORDS[asked]} is asked for "
                         f"({preference.quantization_from or 'preference'}): only the transformers "
                         f"engine quantizes")
        return ["transformers"]
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


def _try_engine(engine: str, entry: CatalogEntry, size: SizeFacts | None, host: Host,
                preference: Preference, notes: list[str]) -> list[_Attempt]:
    """Every (device, quantization) the engine may use, best first, each with its figures."""
    device = preference.device if preference.device not in (None, "", "auto") else None
    gpus, why_none = _gpus_for(device, host, preference)
    if device and device.startswith("cuda") and not gpus:
        notes.append(f"{engine} not used: {why_none}")  # never a silent move to the CPU
        return []
    if engine == "vllm" and host.vllm_device == "cpu":
        if device and device.startswith("cuda"):
            notes.append(f"vLLM not used: vllm.device is cpu (a CPU build of vLLM), but "
                         f"{preference.device_from or 'the device setting'} asks for {device}")
            return []
        return [_vllm_cpu_attempt(entry)]
    if engine == "vllm":
        if not gpus:
            notes.append(f"vLLM not used: it needs an NVIDIA GPU ({why_none})")
            return []
        return [_vllm_attempt(entry, size, gpu, host, preference) for gpu in gpus]
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
    if preference.quantization not in (None, "", "auto"):
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
                          preference: Preference, quantization: str) -> _Attempt:
    usable = _usable(gpu, host)
    if size is None:
        return _Attempt("transformers", gpu.device, quantization, 0, usable, gpu, reasons=[
            f"{entry.id}'s size is unknown (no safetensors headers, not in the catalog): ocrd "
            "cannot check that it fits"])
    estimate = transformers_estimate(size, quantization, on_gpu=True, dtype=preference.dtype,
                                     max_new_tokens=_max_new_tokens(entry, preference))
    attempt = _Attempt("transformers", gpu.device, quantization, estimate.total, usable, gpu)
    attempt.reasons.append(f"estimate: {estimate.describe()}; sizes from {size.source}")
    return attempt


def _cpu_attempt(entry: CatalogEntry, size: SizeFacts | None, preference: Preference, why: str) -> _Attempt:
    asked = preference.quantization or "auto"
    explicit = asked != "auto"
    quantization = asked if explicit else "none"
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
    return _Attempt("transformers", "cpu", quantization, needed, needed, None, reasons=reasons)


def _vllm_attempt(entry: CatalogEntry, size: SizeFacts | None, gpu: Gpu, host: Host,
                  preference: Preference) -> _Attempt:
    usable = _usable(gpu, host)
    fixed = preference.gpu_memory_utilization
    if size is None and fixed is None:
        return _Attempt("vllm", gpu.device, "none", gpu.total, usable, gpu, reasons=[
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
    return _Attempt("vllm", gpu.device, "none", round(share * gpu.total), usable, gpu, share, reasons=reasons)


def _vllm_cpu_attempt(entry: CatalogEntry) -> _Attempt:
    # RAM is not planned (as for transformers on the CPU); vLLM's CPU build sizes its KV cache
    # from VLLM_CPU_KVCACHE_SPACE, not from a share of a device.
    return _Attempt("vllm", "cpu", "none", 0, 0, None, reasons=[
        f"vLLM on the CPU: vllm.device is cpu (a CPU build of vLLM), so {entry.id} gets no GPU "
        "and no GPU memory is planned (no gpu_memory_utilization)"])


def _fitting(entry: CatalogEntry, attempt: _Attempt, size: SizeFacts | None, notes: list[str]) -> Decision:
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


def _headline(entry: CatalogEntry, attempt: _Attempt) -> str:
    if attempt.gpu is None:
        return ""  # the CPU attempt's own first reason says it
    where = (f"{attempt.device} ({attempt.gpu.name}), which has {gib(attempt.usable)} usable, "
             f"the most of the GPUs ocrd may use")
    if attempt.engine == "vllm":
        first = ", the first engine in the catalog's order," if entry.engines[0] == "vllm" else ""
        return f"vLLM{first} fits: it needs about {gib(attempt.needed)} on {where}"
    words = QUANT_WORDS[attempt.quantization]
    return f"transformers {words} fits: it needs about {gib(attempt.needed)} on {where}"


def _nothing_fits(entry: CatalogEntry, attempts: list[_Attempt], host: Host, notes: list[str]) -> Decision:
    if not attempts:
        refusals = [note for note in notes if " not used: " in note]
        why = f": {'; '.join(refusals)}" if refusals else ""
        reasons = [f"no engine can run {entry.id} on this host{why}",
                   *(note for note in notes if note not in refusals)]
        return Decision(entry.id, "", "cpu", "none", 0.0, 0, tuple(reasons), False)
    # The smallest option of each engine and device is the one to make room for.
    smallest: dict[tuple[str, str], _Attempt] = {}
    for attempt in attempts:
        key = (attempt.engine, attempt.device)
        if key not in smallest or attempt.needed < smallest[key].needed:
            smallest[key] = attempt
    options = [(a, _evictable(a, host)) for a in smallest.values()]
    # First (catalog order, most usable memory) whose eviction makes room; else the least missing.
    best, evict = next(((a, e) for a, e in options if e), min(options, key=lambda o: o[0].shortfall))
    words = "" if best.engine == "vllm" else f", {QUANT_WORDS[best.quantization]}"
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


def _evictable(attempt: _Attempt, host: Host) -> list[str]:
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


def _room_advice(attempt: _Attempt, evict: list[str], host: Host) -> str:
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
    if decision.engine == "upstream":
        return f"upstream at {decision.device}"
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
