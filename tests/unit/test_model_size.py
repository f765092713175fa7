"""ocrd.planning.model_size: parameter counts from real safetensors files (written here with the
``safetensors`` library, or by transformers itself for the tiny VLM fixtures), config.json's KV
facts, and the catalog fallback for models that are not downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from ocrd.catalog import Catalog
from ocrd.planning.model_size import catalog_size_facts, kv_facts, read_snapshot, size_facts, tensor_group
from tests.support.sized_models import cache_model, vlm_tensors, write_safetensors


def _tensors() -> dict[str, np.ndarray]:
    return {
        "visual.blocks.0.attn.qkv.weight": np.zeros((96, 32), dtype=np.float32),  # 3072 vision
        "visual.merger.mlp.0.bias": np.zeros((32,), dtype=np.float32),  # 32 vision
        "model.embed_tokens.weight": np.zeros((100, 16), dtype=np.float32),  # 1600 embedding
        "lm_head.weight": np.zeros((100, 16), dtype=np.float32),  # 1600 embedding
        "model.layers.0.self_attn.q_proj.weight": np.zeros((16, 16), dtype=np.float32),  # 256 linear
        "model.layers.0.self_attn.q_proj.bias": np.zeros((16,), dtype=np.float32),  # 16 small
        "model.norm.weight": np.zeros((16,), dtype=np.float32),  # 16 small
    }


def test_a_single_safetensors_file_is_counted_by_how_quantization_treats_each_tensor(tmp_path):
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    facts = read_snapshot(tmp_path)
    assert (facts.vision_params, facts.embedding_params, facts.small_params) == (3104, 3200, 32)
    assert facts.quantizable_params == 256 and facts.total_params == 6592
    assert facts.checkpoint_bytes == 6592 * 4  # F32 as stored
    assert facts.source == "safetensors headers"


def test_a_sharded_checkpoint_is_read_through_its_index(tmp_path):
    tensors = _tensors()
    names = sorted(tensors)
    first, second = names[:3], names[3:]
    save_file({n: tensors[n] for n in first}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in second}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
    weight_map |= {n: "model-00002-of-00002.safetensors" for n in second}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    facts = read_snapshot(tmp_path)
    assert facts.total_params == 6592 and facts.vision_params == 3104


def test_a_shard_still_missing_gives_no_facts_and_is_read_once_it_arrives(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert read_snapshot(tmp_path) is None
    save_file({"model.layers.1.mlp.weight": np.zeros((8, 8), dtype=np.float32)},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    assert read_snapshot(tmp_path).total_params == 6592 + 64  # the failure was not remembered


def test_a_sparse_test_checkpoint_is_a_real_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    data = write_safetensors(path, vlm_tensors(vision=4096, embeddings=2048, linear=8192))
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size == 8 + header + data == 8 + header + (4096 + 2048 + 8192 + 1024) * 2
    with safe_open(str(path), framework="numpy") as opened:  # the safetensors library's own check
        assert opened.get_slice("visual.blocks.0.mlp.fc1.weight").get_shape() == [4, 1024]
        assert opened.get_slice("model.norm.weight").get_shape() == [1024]
    facts = read_snapshot(tmp_path)
    assert (facts.vision_params, facts.embedding_params, facts.quantizable_params, facts.small_params) == (
        4096, 2048, 8192, 1024)


@pytest.mark.parametrize(("name", "shape", "group"), [
    ("visual.blocks.31.mlp.fc2.weight", [1280, 5120], "vision"),  # Qwen2-VL / PaddleOCR-VL
    ("model.visual.merger.mlp.0.weight", [5120, 5120], "vision"),  # Qwen3-VL
    ("vision_tower.blocks.0.attn.qkv.weight", [4608, 1536], "vision"),  # dots.ocr
    ("model.vision_tower.layers.0.attn.qkv.weight", [2304, 768], "vision"),  # GOT-OCR2 (HF)
    ("multi_modal_projector.linear_1.weight", [4096, 1024], "vision"),  # LLaVA
    ("model.vision_model.encoder.layers.0.mlp.fc1.weight", [3072, 768], "vision"),  # Idefics3
    ("model.connector.modality_projection.proj.weight", [576, 12288], "vision"),  # Idefics3
    ("vision_model.encoder.layers.0.mlp.fc1.weight", [4096, 1024], "vision"),  # InternVL
    ("mlp1.1.weight", [2048, 4096], "vision"),  # InternVL projector
    ("model.vision_embed_tokens.img_processor.vision_model.embeddings.patch_embedding.weight",
     [1024, 3, 14, 14], "vision"),  # Phi-3.5-vision
    ("model.vision.blocks.0.attn.qkv.weight", [3456, 1152], "vision"),  # moondream2
    ("vpm.encoder.layers.0.mlp.fc1.weight", [4304, 1152], "vision"),  # MiniCPM-V
    ("model.sam_model.blocks.0.attn.qkv.weight", [2304, 768], "vision"),  # DeepSeek-OCR
    ("model.embed_tokens.weight", [151936, 1536], "embedding"),
    ("language_model.model.embed_tokens.weight", [32064, 3072], "embedding"),
    ("lm_head.weight", [151936, 1536], "embedding"),
    ("transformer.wte.weight", [50257, 768], "embedding"),
    ("model.layers.0.self_attn.q_proj.weight", [1536, 1536], "linear"),
    ("model.language_model.layers.3.mlp.down_proj.weight", [2048, 6144], "linear"),
    ("model.layers.0.self_attn.q_proj.bias", [1536], "small"),
    ("model.layers.0.input_layernorm.weight", [1536], "small"),
])
def test_tensor_names_of_the_catalogs_architectures_fall_in_the_right_group(name, shape, group):
    assert tensor_group(name, shape) == group


def test_kv_cache_per_token_comes_from_the_language_models_config():
    nested = {"text_config": {"num_hidden_layers": 28, "num_attention_heads": 12,
                              "num_key_value_heads": 2, "hidden_size": 1536,
                              "max_position_embeddings": 32768}}
    assert kv_facts(nested) == (2 * 28 * 2 * 128 * 2, 32768)  # K and V, 28 layers, 2 heads of 128
    flat = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 3072,
            "max_position_embeddings": 131072}  # no num_key_value_heads: every head has its own
    assert kv_facts(flat) == (2 * 32 * 32 * 96 * 2, 131072)
    assert kv_facts({"model_type": "mystery"}) == (None, None)


def test_a_model_not_downloaded_is_sized_from_the_catalog():
    entry = Catalog.load_default().resolve("dots.ocr")
    facts = size_facts(None, {}, entry)
    assert facts == catalog_size_facts(entry)
    assert (facts.total_params, facts.vision_params) == (3_040_000_000, 1_200_000_000)
    assert facts.kv_bytes_per_token is None and facts.source.startswith("the catalog")


def test_cached_headers_win_over_the_catalog_and_the_config_adds_kv_facts(tmp_path):
    entry = Catalog.load_default().resolve("qwen2-vl-2b")
    snapshot = cache_model(tmp_path, entry.id, vlm_tensors(vision=2048, embeddings=2048, linear=4096))
    facts = size_facts(snapshot, json.loads((snapshot / "config.json").read_text()), entry)
    assert facts.total_params == 2048 + 2048 + 4096 + 1024 and facts.source == "safetensors headers"
    assert facts.kv_bytes_per_token == 28_672 and facts.max_position_embeddings == 32768


def test_a_checkpoint_without_safetensors_falls_back_to_the_catalog(tmp_path: Path):
    entry = Catalog.load_default().resolve("got-ocr2")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    assert size_facts(tmp_path, {}, entry).source.startswith("the catalog")
    uncatalogued = Catalog.inferred_entry("someone/vlm", {"model_type": "llava"})
    assert size_facts(tmp_path, {}, uncatalogued) is None  # nothing knows its size


def test_an_already_quantized_checkpoint_is_marked(tmp_path):
    entry = Catalog.inferred_entry("someone/vlm-awq", {"model_type": "llava"})
    write_safetensors(tmp_path / "model.safetensors", vlm_tensors(vision=1024, embeddings=1024, linear=1024))
    facts = size_facts(tmp_path, {"quantization_config": {"quant_method": "awq"}}, entry)
    assert facts.prequantized == "awq"
