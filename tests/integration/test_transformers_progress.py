"""Shard progress while transformers loads weights: a tracker over its real loading loop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocrd.worker.transformers_progress import ShardTracker, shard_map, track_weight_loading


class Mapping:
    """Shaped like transformers' WeightTransform: target key -> checkpoint keys it reads."""

    def __init__(self, *keys: str):
        self.layer_targets = {keys[0]: set(keys)}


def test_a_shard_completes_when_its_last_parameter_is_loaded():
    key_to_shard = {"a": "s1", "b": "s1", "c": "s2", "d": "s2", "e": "s3"}
    reports = []
    tracker = ShardTracker(key_to_shard, ["s1", "s2", "s3"], lambda *r: reports.append(r))
    items = [("a", Mapping("a")), ("c", Mapping("c")), ("b", Mapping("b")), ("d", Mapping("d", "e"))]
    for _ in tracker.track(items):
        pass
    tracker.finish(len(items))
    done = [r[0] for r in reports]
    assert done == sorted(done) and done[-1] == 3
    assert (1, 3, 3, 4) in reports  # s1 complete once "b" (its last key) is in
    assert reports[-1] == (3, 3, 4, 4)


def test_unfamiliar_items_still_end_in_all_shards_loaded():
    reports = []
    tracker = ShardTracker({"a": "s1", "b": "s2"}, ["s1", "s2"], lambda *r: reports.append(r))
    for _ in tracker.track([("a", object()), ("b", None)]):
        pass
    tracker.finish(2)
    assert reports[-1] == (2, 2, 2, 2)


@pytest.fixture(scope="module")
def sharded_checkpoint(tmp_path_factory) -> Path:
    """A tiny Llama saved in several safetensors shards, as large checkpoints are."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("sharded")
    LlamaForCausalLM(config).save_pretrained(path, max_shard_size="100KB")
    return path


def test_real_load_reports_each_shard(sharded_checkpoint: Path):
    from transformers import AutoModelForCausalLM

    key_to_shard, shards = shard_map(sharded_checkpoint)
    assert len(shards) >= 3 and set(key_to_shard.values()) == set(shards)
    reports = []
    with track_weight_loading(ShardTracker(key_to_shard, shards, lambda *r: reports.append(r))):
        model = AutoModelForCausalLM.from_pretrained(sharded_checkpoint)
    assert model.model.layers[0].mlp.up_proj.weight.shape == (128, 64)
    done = [r[0] for r in reports]
    assert done == sorted(done) and done[-1] == len(shards)
    assert any(0 < d < len(shards) for d in done)  # shards completed one by one, not all at the end
    assert reports[-1][2] == reports[-1][3] > 0  # every parameter counted


def test_the_hook_is_removed_after_the_load(sharded_checkpoint: Path):
    import transformers.core_model_loading as loading

    original = loading.tqdm
    with pytest.raises(RuntimeError), track_weight_loading(ShardTracker({}, [], lambda *r: None)):
        raise RuntimeError("load failed")
    assert loading.tqdm is original


def test_single_file_checkpoint_is_one_shard(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert shard_map(tmp_path) == ({}, ["model.safetensors"])
    assert shard_map(None) == ({}, [])
