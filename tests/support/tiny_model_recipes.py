"""How each tiny random-weight VLM is made: tokenizer, config, processor, generation config.

``tests/support/tiny_models.py`` owns the public API and the Hugging Face cache layout; this module
holds one recipe per model family. Each recipe writes a complete ``save_pretrained`` directory that
the real Transformers classes load unchanged. The sizes are picked for two consumers besides
Transformers itself: bitsandbytes 4-bit breaks on linear layers narrower than 64, and vLLM's CPU
attention rejects head_dim 16, so every projection is >= 64 wide and every head is 32 wide
(hidden 64, 2 heads, 2 key/value heads).

Everything here imports transformers lazily: the callers' module must stay importable by tests
that never build a model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The corpus the byte-level BPE tokenizers are trained on. The content is irrelevant (weights are
# random); it only has to give BPE something to merge so the vocabulary is not bytes only.
_CORPUS = (
    "Read the text in this image and return it as markdown.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
    "Invoice number, total amount, date: table with rows and columns.",
    "You are a helpful assistant. Describe the picture in detail.",
)

# Shared by every text tower: 2 heads of 32, as many key/value heads as query heads so that
# k_proj/v_proj are 64 wide too (one KV head would make them 32 wide and break 4-bit).
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


@dataclass(frozen=True)
class Built:
    """What a recipe reports about the directory it wrote."""

    architecture: str
    image_token_count: int | None


@dataclass(frozen=True)
class Recipe:
    """How to make one family: ``make(out_dir)`` writes the files, seeding is done by the caller."""

    make: Callable[[Path], Built]


# --------------------------------------------------------------------------- shared helpers


def train_tokenizer(specials: list[str], chat_template: str, **special_roles: Any) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``_CORPUS`` with ``specials``.

    ``special_roles`` names the roles (``eos_token="<|im_end|>"``, ...). Special tokens go first in
    the trainer's list, so they get the lowest ids and are matched whole, never split into bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=chat_template, **special_roles)


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def save_model(model: Any, out_dir: Path, *, eos: list[int], pad: int, bos: int | None = None) -> Built:
    """Saves ``model`` as float32 safetensors with a generation config naming the stop tokens.

    Float32 because bitsandbytes quantizes from it on CPU and CPU matmuls in bf16 are slow; vLLM
    casts to bf16 itself with ``--dtype bfloat16``.
    """
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos if len(eos) > 1 else eos[0], pad_token_id=pad
    )
    model.to(dtype=__import__("torch").float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    return Built(type(model).__name__, None)


def _text_config(model_type: str, tokenizer: Any, **extra: Any) -> dict[str, Any]:
    # vocab_size == len(tokenizer): every id the random model can sample decodes to real text, so
    # streaming tests never see ids the tokenizer cannot render.
    return {"model_type": model_type, "vocab_size": len(tokenizer), **_TEXT, **extra}


# --------------------------------------------------------------------------- Qwen2-VL / Qwen2.5-VL

# Qwen2-VL-Instruct's own template (tokenizer_config.json on the Hub), unchanged.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
# Qwen's vision tower cuts 8x8-pixel patches (real: 14) and merges 2x2 of them into one token, so
# an image becomes one token per 16x16 pixels. Capping the area at 64x64 keeps prompts <= 16 image
# tokens whatever the test image; the count still depends on the aspect ratio, hence no fixed count.
QWEN_PATCH = 8
QWEN_MIN_PIXELS = 32 * 32
QWEN_MAX_PIXELS = 64 * 64


def _qwen_tokenizer() -> Any:
    return train_tokenizer(
        QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def save_qwen_processor(tokenizer: Any, out_dir: Path, processor_class: str) -> None:
    """Writes the processor without a video processor (that one needs torchvision).

    ``preprocessor_config.json`` is the image processor's, as on the real Qwen2-VL repos; the
    video processor falls back to it, which is why ``AutoProcessor`` fails only on the video part.
    """
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(
        patch_size=QWEN_PATCH,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
    )
    processor = image_only_processor(getattr(transformers, processor_class))(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )
    processor.save_pretrained(out_dir)


def image_only_processor(processor_cls: type) -> type:
    """A subclass of a Qwen processor class whose constructor takes no video processor.

    ``ProcessorMixin`` finds sub-processors from the ``__init__`` signature, so dropping the
    ``video_processor`` parameter is what stops it from loading (and saving) one.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: N807
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)

    return type(processor_cls.__name__, (processor_cls,), {"__init__": __init__})


def _make_qwen2_vl(out_dir: Path) -> Built:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = _qwen_tokenizer()
    pad, start, end, image, video = _ids(
        tokenizer, "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
    )
    config = Qwen2VLConfig(
        text_config=_text_config(
            "qwen2_vl_text",
            tokenizer,
            # mrope splits the rotary half of head_dim (32 / 2 = 16) over time, height, width.
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        ),
        vision_config={
            "depth": 2, "embed_dim": 64, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 2,
            "patch_size": QWEN_PATCH, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },  # fmt: skip
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    built = save_model(Qwen2VLForConditionalGeneration(config), out_dir, eos=_ids(tokenizer, "<|im_end|>", "<|endoftext|>"), pad=pad)
    save_qwen_processor(tokenizer, out_dir, "Qwen2VLProcessor")
    return built


def _make_qwen2_5_vl(out_dir: Path) -> Built:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _qwen_tokenizer()
    pad, start, end, image, video = _ids(
        tokenizer, "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
    )
    config = Qwen2_5_VLConfig(
        text_config=_text_config(
            "qwen2_5_vl_text",
            tokenizer,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        ),
        vision_config={
            "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
            "out_hidden_size": 64, "patch_size": QWEN_PATCH, "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            # Windows of 4x4 merged tokens as in the real model (112 px / 14 px / 2), with the
            # last of the 2 blocks attending globally (indexes must be < depth).
            "window_size": 4 * 2 * QWEN_PATCH, "fullatt_block_indexes": [1],
        },  # fmt: skip
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    built = save_model(Qwen2_5_VLForConditionalGeneration(config), out_dir, eos=_ids(tokenizer, "<|im_end|>", "<|endoftext|>"), pad=pad)
    save_qwen_processor(tokenizer, out_dir, "Qwen2_5_VLProcessor")
    return built
