"""Cached models of a chosen size, for planner tests: real safetensors files, laid out in a real
Hugging Face cache, without gigabytes on disk.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data offsets) and the tensor data. ``write_safetensors`` writes exactly that, with the data as a
sparse hole (``truncate``), so a "7B model" costs a few kilobytes yet is a valid file that the
``safetensors`` library opens and huggingface_hub's header reader parses. ``cache_model`` puts
one into ``hub/models--ORG--NAME/snapshots/<rev>/`` with its ``config.json`` and ``refs/main``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

REV = "0123456789abcdef0123456789abcdef01234567"
DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1, "U8": 1}

# A Qwen2-VL-like language model for config.json: 28 layers, 2 KV heads of 128 ->
# 2 x 28 x 2 x 128 x 2 bytes = 28,672 bytes of KV cache per token.
QWEN_LIKE_CONFIG = {
    "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
    "vision_config": {"depth": 32},
    "text_config": {"num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                    "hidden_size": 1536, "max_position_embeddings": 32768},
}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """Writes a safetensors file whose data is a sparse hole; returns the data's size in bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return offset


def vlm_tensors(*, vision: int, embeddings: int, linear: int, small: int = 1024,
                dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """A VLM's tensors with these parameter counts (each a multiple of 1024), named like
    Qwen2-VL's checkpoint: ``visual.*``, ``model.embed_tokens``, ``model.layers.*``, ``lm_head``."""
    half = embeddings // 2
    return {
        "visual.blocks.0.mlp.fc1.weight": (dtype, [vision // 1024, 1024]),
        "model.embed_tokens.weight": (dtype, [half // 1024, 1024]),
        "model.layers.0.mlp.up_proj.weight": (dtype, [linear // 1024, 1024]),
        "model.norm.weight": (dtype, [small]),
        "lm_head.weight": (dtype, [(embeddings - half) // 1024, 1024]),
    }


def cache_model(hub: Path, repo_id: str, tensors: dict[str, tuple[str, list[int]]],
                config: dict | None = None) -> Path:
    """A snapshot of ``repo_id`` as huggingface_hub lays it out; returns the snapshot directory."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    (snapshot / "config.json").write_text(json.dumps(config if config is not None else QWEN_LIKE_CONFIG))
    write_safetensors(snapshot / "model.safetensors", tensors)
    return snapshot
