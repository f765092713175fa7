"""Loading a model's processor, with an image-only fallback for hosts without torchvision.

Qwen2-VL, Qwen2.5-VL, SmolVLM and other processors own a *video* processor that needs
torchvision, so ``AutoProcessor.from_pretrained`` raises ImportError on hosts without a working
torchvision (every CPU host of ours: only CUDA builds of torchvision exist for our torch).
ocrd never feeds video, so the runner builds the same processor class without its video part:
the tokenizer and image processor load on their own (transformers then picks the Pillow image
processor), and a small subclass accepts ``video_processor=None``, which ProcessorMixin's class
check would otherwise reject. Verified against transformers 5.24 (``ProcessorMixin.__init__``
checks every attribute named in the ``__init__`` signature).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("ocrd.worker.transformers")


def load_processor(repo_id: str, snapshot: Path | None, hub_kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """The processor, and whether it is the image-only fallback."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(repo_id, **hub_kwargs), False
    except ImportError as exc:
        original = exc
    log.warning("the full processor of %s cannot load (%s); trying an image-only one", repo_id, _first_line(original))
    try:
        processor = image_only_processor(repo_id, snapshot, hub_kwargs)
    except Exception as exc:  # the first error is the one the user can act on
        log.warning("the image-only processor failed too: %s", exc)
        raise original from exc
    if processor is None:
        raise original
    return processor, True


def image_only_processor(repo_id: str, snapshot: Path | None, hub_kwargs: dict[str, Any]) -> Any | None:
    """The model's processor class without its video processor; None when that makes no sense."""
    from transformers import AutoImageProcessor, AutoTokenizer

    base = processor_class(repo_id, snapshot, hub_kwargs)
    if base is None or "video_processor" not in base.get_attributes():
        return None
    image_only = _image_only_class(base)
    parts = {
        "tokenizer": AutoTokenizer.from_pretrained(repo_id, **hub_kwargs),
        "image_processor": AutoImageProcessor.from_pretrained(repo_id, **hub_kwargs),
        "video_processor": None,
    }
    attributes = image_only.get_attributes()
    if any(name not in parts for name in attributes):  # e.g. an audio feature extractor too
        return None
    processor_dict, extra = image_only.get_processor_dict(repo_id, **hub_kwargs)
    return image_only.from_args_and_dict([parts[name] for name in attributes], processor_dict, **extra)


def _image_only_class(base: type[Any]) -> type[Any]:
    def check_argument_for_proper_class(self: Any, argument_name: str, argument: Any) -> Any:
        if argument is None and "video" in argument_name:
            return None
        return base.check_argument_for_proper_class(self, argument_name, argument)

    return type(f"{base.__name__}ImageOnly", (base,), {
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "__doc__": f"{base.__name__} without its video processor (no torchvision here).",
    })


def processor_class(repo_id: str, snapshot: Path | None, hub_kwargs: dict[str, Any]) -> type[Any] | None:
    """The processor class the model's files name, else the one transformers maps its type to."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name

    name = _named_processor_class(snapshot)
    if name is None:
        config = AutoConfig.from_pretrained(repo_id, **hub_kwargs)
        name = PROCESSOR_MAPPING_NAMES.get(getattr(config, "model_type", ""))
    return processor_class_from_name(name) if isinstance(name, str) else None


def _named_processor_class(snapshot: Path | None) -> str | None:
    if snapshot is None:
        return None
    for file_name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            value = json.loads((snapshot / file_name).read_text(encoding="utf-8")).get("processor_class")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
