"""Catalog entries for models that are in the Hugging Face cache but not in ``models.toml``.

Such a model is still servable with transformers when its ``config.json`` says it is an
image-text-to-text model. The daemon never imports transformers, so "transformers implements this
model type" is answered from a copy of transformers' own list (``image_text_to_text.toml``).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

# Loaders a repository's own code (config "auto_map") may register, in the order ocrd prefers
# them: the first one the repository offers is used.
_REMOTE_LOADERS = ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")
# Class-name endings of models that generate text. A config with a vision_config whose
# architectures end otherwise (CLIPModel, SiglipModel, ...) is an encoder, not a servable VLM.
_GENERATIVE_SUFFIXES = (
    "ForConditionalGeneration", "ForCausalLM", "ForVision2Seq", "ForImageTextToText",
    "LMHeadModel", "ChatModel",
)


@functools.cache
def image_text_to_text_model_types() -> frozenset[str]:
    text = resources.files("ocrd.catalog").joinpath("image_text_to_text.toml").read_text("utf-8")
    return frozenset(tomllib.loads(text)["model_types"])


def inferred_transformers_facts(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """``engine_options["transformers"]`` for a model known only by its config.json, or None
    when the config does not describe an image-text-to-text model."""
    if not isinstance(config, Mapping):
        return None
    model_type = config.get("model_type")
    native = isinstance(model_type, str) and model_type in image_text_to_text_model_types()
    if native:
        return {"loader": "AutoModelForImageTextToText", "trust_remote_code": False}
    if "vision_config" not in config or not _generative(config):
        return None
    auto_map = config.get("auto_map")
    if isinstance(auto_map, Mapping):
        # The repository ships its own modeling code: load it with the class it registers.
        loader = next((name for name in _REMOTE_LOADERS if name in auto_map), None)
        if loader is None:
            return None
        return {"loader": loader, "trust_remote_code": True}
    return {"loader": "AutoModelForImageTextToText", "trust_remote_code": False}


def _generative(config: Mapping[str, Any]) -> bool:
    architectures = config.get("architectures")
    if not architectures:
        return True  # nothing says otherwise; vision_config is the evidence we have
    return any(isinstance(name, str) and name.endswith(_GENERATIVE_SUFFIXES) for name in architectures)
