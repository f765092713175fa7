"""How big a model is, from facts: the safetensors headers and ``config.json`` of its cached snapshot.

A safetensors file starts with an 8-byte little-endian length and a JSON header naming every
tensor with its dtype and shape; ``huggingface_hub.get_local_safetensors_metadata`` reads those
headers (one file, or every shard of ``model.safetensors.index.json``) without reading a weight or
importing torch. From them ``SizeFacts`` counts parameters in the groups that quantization treats
differently:

* the **vision side** (vision tower, projector, resampler): ocrd's transformers runner keeps it in
  16-bit when it quantizes (``ocrd/worker/transformers_load.py``: only the language model's linear
  layers are quantized);
* **embeddings and the output head**: bitsandbytes never quantizes ``nn.Embedding``, and
  transformers keeps the output head (``lm_head``) in 16-bit (``get_keys_to_not_convert``);
* **small tensors** of the language model (norms, biases): one-dimensional, never quantized;
* the rest, the language model's linear weights: what 8-bit / 4-bit shrink.

``config.json`` adds the KV-cache size per token (layers x KV heads x head size) and the context
length. A model that is not downloaded has no headers: ``catalog_size_facts`` falls back to the
catalog's ``params_billion`` / ``bf16_bytes`` / ``vision_params_billion``, coarser but still facts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrd.catalog import CatalogEntry

log = logging.getLogger("ocrd.planning.model_size")

# Module names (one dotted component of a tensor name) that belong to the vision side, as the
# checkpoints of the catalog's architectures name them: Qwen2-VL/2.5-VL/PaddleOCR-VL ``visual.``,
# LLaVA/GOT-OCR2/dots.ocr ``vision_tower.`` + ``multi_modal_projector.``, Idefics3/SmolVLM/InternVL
# ``vision_model.`` + ``connector.`` / ``mlp1.``, MiniCPM-V ``vpm.`` + ``resampler.``, moondream2
# ``vision.`` / ``vision_encoder.`` (+ its ``region.`` heads), Phi-3-vision
# ``vision_embed_tokens.``, DeepSeek-OCR ``sam_model.`` + ``projector.``, PaddleOCR-VL ``mlp_AR.``.
VISION_MODULES = frozenset({
    "visual", "vision_tower", "vision_model", "vision_encoder", "vision", "vpm",
    "vision_embed_tokens", "img_processor", "image_encoder", "sam_model", "region",
    "multi_modal_projector", "mm_projector", "projector", "connector", "mlp1", "resampler",
    "mlp_AR", "image_newline", "view_seperator",
})
# Input embeddings and output heads of the language model (GPT-2 ``wte``, Falcon
# ``word_embeddings``, InternLM ``tok_embeddings``, GPT-NeoX ``embed_in``/``embed_out``).
EMBEDDING_MODULES = frozenset({
    "embed_tokens", "wte", "wpe", "word_embeddings", "tok_embeddings", "embed_in", "embed_out",
    "lm_head",
})
# Where a multimodal config keeps its language model's settings.
_TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
_KV_BYTES_PER_VALUE = 2  # the KV cache is kept in the model's 16-bit dtype on a GPU


@dataclass(frozen=True)
class SizeFacts:
    """Parameter counts by how quantization treats them, and the KV cache's size per token."""

    total_params: int
    vision_params: int = 0  # vision tower + projector (kept 16-bit by ocrd's quantization)
    embedding_params: int = 0  # input embeddings + output head (kept 16-bit by bitsandbytes)
    small_params: int = 0  # norms and biases of the language model (1-D, never quantized)
    checkpoint_bytes: int = 0  # tensor bytes as stored (dtype as saved, e.g. F32 or BF16)
    source: str = "safetensors headers"  # or "the catalog"
    kv_bytes_per_token: int | None = None  # K and V of every layer at 16 bit, from config.json
    max_position_embeddings: int | None = None  # the language model's context, from config.json
    prequantized: str = ""  # quant_method of a checkpoint that is already quantized

    @property
    def quantizable_params(self) -> int:
        """The language model's linear weights: what 8-bit and 4-bit shrink."""
        return max(0, self.total_params - self.vision_params - self.embedding_params - self.small_params)

    @property
    def kept_params(self) -> int:
        """What stays in 16-bit when the model is quantized."""
        return self.total_params - self.quantizable_params


def size_facts(snapshot_dir: Path | None, config: Mapping[str, Any], entry: CatalogEntry) -> SizeFacts | None:
    """The cached snapshot's facts when its headers can be read, else the catalog's; None when
    neither knows the model's size."""
    if snapshot_dir is not None:
        facts = read_snapshot(snapshot_dir)
        if facts is not None:
            return _with_config(facts, config)
    facts = catalog_size_facts(entry)
    return _with_config(facts, config) if facts is not None else None


def read_snapshot(snapshot_dir: Path) -> SizeFacts | None:
    """Counts from the safetensors headers of a snapshot; None when it has none or they cannot be
    read (e.g. a shard still downloading). A snapshot's directory is named by its commit, so a
    successful answer never changes and is kept."""
    known = _READ.get(snapshot_dir)
    if known is None:
        known = _read_headers(snapshot_dir)
        if known is not None:
            _READ[snapshot_dir] = known
    return known


_READ: dict[Path, SizeFacts] = {}


def _read_headers(snapshot_dir: Path) -> SizeFacts | None:
    from huggingface_hub import get_local_safetensors_metadata
    from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

    try:
        metadata = get_local_safetensors_metadata(snapshot_dir)
    except (NotASafetensorsRepoError, SafetensorsParsingError, OSError, ValueError, KeyError) as exc:
        log.info("no safetensors sizes for %s: %s", snapshot_dir, exc)
        return None
    counts = {"vision": 0, "embedding": 0, "small": 0, "linear": 0}
    stored = 0
    for file in metadata.files_metadata.values():
        for name, tensor in file.tensors.items():
            counts[tensor_group(name, tensor.shape)] += tensor.parameter_count
            stored += tensor.data_offsets[1] - tensor.data_offsets[0]
    total = sum(counts.values())
    if total == 0:
        return None
    return SizeFacts(total_params=total, vision_params=counts["vision"],
                     embedding_params=counts["embedding"], small_params=counts["small"],
                     checkpoint_bytes=stored, source="safetensors headers")


def tensor_group(name: str, shape: list[int]) -> str:
    """``vision``, ``embedding``, ``small`` (1-D) or ``linear`` (a weight quantization shrinks)."""
    modules = name.split(".")[:-1]
    if any(module in VISION_MODULES for module in modules):
        return "vision"
    if any(module in EMBEDDING_MODULES for module in modules):
        return "embedding"
    return "small" if len(shape) < 2 else "linear"


def catalog_size_facts(entry: CatalogEntry) -> SizeFacts | None:
    """The catalog's size figures for a model that is not downloaded (no split of embeddings)."""
    if entry.params_billion is not None:
        total = round(entry.params_billion * 1e9)
    elif entry.bf16_bytes is not None:
        total = entry.bf16_bytes // 2
    else:
        return None
    vision = round((entry.vision_params_billion or 0.0) * 1e9)
    return SizeFacts(total_params=total, vision_params=min(vision, total),
                     checkpoint_bytes=entry.bf16_bytes or total * 2,
                     source="the catalog (not downloaded: no safetensors headers to read)")


def _with_config(facts: SizeFacts, config: Mapping[str, Any]) -> SizeFacts:
    kv, context = kv_facts(config)
    quantized = config.get("quantization_config") if isinstance(config, Mapping) else None
    method = ""
    if quantized:
        method = str(quantized.get("quant_method", "quantized")) if isinstance(quantized, Mapping) else "quantized"
    return SizeFacts(**{**facts.__dict__, "kv_bytes_per_token": kv,
                        "max_position_embeddings": context, "prequantized": method})


def kv_facts(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(KV-cache bytes per token at 16 bit, context length) from a config.json; None where the
    config does not say."""
    if not isinstance(config, Mapping):
        return None, None
    text = next((config[key] for key in _TEXT_CONFIG_KEYS if isinstance(config.get(key), Mapping)), config)
    layers = _first_int(text, "num_hidden_layers", "n_layer", "num_layers") or _first_int(
        config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first_int(text, "num_attention_heads", "n_head")
    hidden = _first_int(text, "hidden_size", "n_embd", "d_model")
    kv_heads = _first_int(text, "num_key_value_heads", "multi_query_group_num") or heads
    head_dim = _first_int(text, "head_dim") or (hidden // heads if hidden and heads else None)
    context = _first_int(text, "max_position_embeddings", "n_positions", "seq_length") or _first_int(
        config, "max_position_embeddings")
    if not (layers and kv_heads and head_dim):
        return None, context
    return 2 * layers * kv_heads * head_dim * _KV_BYTES_PER_VALUE, context


def _first_int(mapping: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
