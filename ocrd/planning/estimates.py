"""Memory estimates: what a model needs on a device, for each engine that may use a GPU.

The figures behind the planner's decisions (``ocrd.planning.planner``; docs/planner.md compares
them with the seed's):

* transformers on a GPU: 16-bit kept parameters (vision side, embeddings, output head, norms) x 2
  bytes + the language model's linear weights x (2 | 1 | 0.5625) bytes for (none | 8bit | 4bit)
  + CUDA context + activations for one page image + the KV cache for the image and
  ``max_new_tokens``; on the CPU float32 (4 bytes) and no CUDA context;
* vLLM: bf16 weights + the KV cache for ``--max-model-len`` (the catalog's, else the model's own
  context length) + vLLM's profiled activations + CUDA graphs + CUDA context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ocrd.catalog import CatalogEntry
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
QUANT_WORDS = {"none": "unquantized", "8bit": "8-bit", "4bit": "4-bit"}


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

