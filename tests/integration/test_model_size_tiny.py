"""ocrd.planning.model_size on checkpoints that transformers itself saved (the tiny VLM fixtures,
built with torch): the vision/language split of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open

from ocrd.planning.model_size import read_snapshot

# Module prefixes that hold the vision side in each tiny fixture, as transformers saves them.
VISION_PREFIXES = {
    "qwen2_vl": ("visual.",),
    "llava": ("vision_tower.", "multi_modal_projector."),
    "idefics3": ("model.vision_model.", "model.connector."),
    "got_ocr2": ("vision_tower.", "multi_modal_projector."),
}


@pytest.mark.parametrize("kind", sorted(VISION_PREFIXES))
def test_checkpoints_saved_by_transformers_split_into_vision_and_language(kind, tmp_path):
    from tests.support.tiny_models import build_tiny_model

    model = build_tiny_model(kind, tmp_path / "hub")
    facts = read_snapshot(model.snapshot)
    with safe_open(str(model.snapshot / "model.safetensors"), framework="numpy") as opened:
        counts = {name: int(np.prod(opened.get_slice(name).get_shape())) for name in opened.keys()}
    vision = sum(n for name, n in counts.items() if name.startswith(VISION_PREFIXES[kind]))
    assert facts.total_params == sum(counts.values())
    assert facts.vision_params == vision > 0
    assert facts.embedding_params > 0 and facts.quantizable_params > 0
