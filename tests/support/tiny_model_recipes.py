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

import json
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

    Float32 because every CPU kernel supports it and bitsandbytes quantizes from it at load time
    (checked: 8-bit and 4-bit on CPU); vLLM casts to bf16 itself with ``--dtype bfloat16``.
    """
    import torch
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos if len(eos) > 1 else eos[0], pad_token_id=pad
    )
    model.to(torch.float32)
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
]
# Qwen's vision tower cuts 8x8-pixel patches (real: 14) and merges 2x2 of them into one token, so
# an image becomes one token per 16x16 pixels. Capping the area at 64x64 keeps prompts <= 16 image
# tokens whatever the test image; the count still depends on the aspect ratio, hence no fixed count.
QWEN_PATCH = 8
QWEN_MIN_PIXELS = 32 * 32
QWEN_MAX_PIXELS = 64 * 64


def save_qwen_processor(tokenizer: Any, out_dir: Path, processor_class: str) -> None:
    """Writes the processor files as a real Qwen repo has them, video processor included.

    The video processor cannot be built here (``Qwen2VLVideoProcessor`` needs torchvision), so its
    entry in ``processor_config.json`` is written by hand with the same patch geometry. Where
    torchvision is installed (GPU hosts, vLLM) ``AutoProcessor`` then loads the whole processor;
    without it, ``AutoProcessor`` fails on exactly that entry and the runner must load the
    image-only processor (see ``image_only_processor``).
    """
    import transformers

    image_processor = transformers.Qwen2VLImageProcessorPil(
        patch_size=QWEN_PATCH,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
    )
    processor_cls = image_only_processor(getattr(transformers, processor_class))
    processor_cls(image_processor, tokenizer, chat_template=QWEN_CHAT_TEMPLATE).save_pretrained(out_dir)
    config_file = out_dir / "processor_config.json"
    config = json.loads(config_file.read_text())
    shared = ("patch_size", "temporal_patch_size", "merge_size", "size", "image_mean", "image_std")
    config["video_processor"] = {
        "video_processor_type": "Qwen2VLVideoProcessor",
        **{key: config["image_processor"][key] for key in shared},
        "do_sample_frames": False,
    }
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def image_only_processor(processor_cls: type) -> type:
    """A subclass of a Qwen processor class whose constructor takes no video processor.

    ``ProcessorMixin`` finds sub-processors from the ``__init__`` signature, so dropping the
    ``video_processor`` parameter is what stops ``from_pretrained`` loading one (passing
    ``video_processor=None`` to the stock class fails its type check). The subclass keeps the
    stock name so that what it saves still says ``Qwen2VLProcessor``.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template)

    return type(processor_cls.__name__, (processor_cls,), {"__init__": __init__})


def _qwen_vision(version: str) -> dict[str, Any]:
    shared = {"depth": 2, "num_heads": 2, "patch_size": QWEN_PATCH, "spatial_merge_size": 2}
    shared["temporal_patch_size"] = 2
    if version == "qwen2_vl":
        return {**shared, "embed_dim": 64, "hidden_size": 64, "mlp_ratio": 2}
    # Windows of 4x4 merged tokens as in the real model (112 px / 14 px / 2), and the last of the
    # 2 blocks attends globally (the real indexes 7, 15, ... must be < depth).
    window = {"window_size": 4 * 2 * QWEN_PATCH, "fullatt_block_indexes": [1]}
    return {**shared, "hidden_size": 64, "intermediate_size": 128, "out_hidden_size": 64, **window}


def _make_qwen(out_dir: Path, version: str) -> Built:
    import transformers

    prefix = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL"}[version]
    roles = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    tokenizer = train_tokenizer(QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, **roles)
    pad, eos = _ids(tokenizer, "<|endoftext|>", "<|im_end|>")
    start, end, image, video = _ids(tokenizer, *QWEN_SPECIALS[3:])  # vision start/end, image/video pad
    config = getattr(transformers, f"{prefix}Config")(
        text_config=_text_config(
            f"{version}_text",
            tokenizer,
            bos_token_id=pad,
            eos_token_id=eos,
            # mrope splits the rotary half of head_dim (32 / 2 = 16) over time, height, width.
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        ),
        vision_config=_qwen_vision(version),
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    built = save_model(model, out_dir, eos=[eos, pad], pad=pad, bos=pad)
    save_qwen_processor(tokenizer, out_dir, f"{prefix}Processor")
    return built


# --------------------------------------------------------------------------- LLaVA-1.5

# llava-hf/llava-1.5-7b-hf's template, reduced to what matters: "USER: <image>\n... ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# A 32x32 CLIP tower with 8x8 patches: 16 patch features (+1 CLS that the "default" strategy drops).
LLAVA_IMAGE, LLAVA_PATCH = 32, 8
LLAVA_IMAGE_TOKENS = (LLAVA_IMAGE // LLAVA_PATCH) ** 2


def _llava_tokenizer() -> Any:
    from tokenizers import processors

    tokenizer = train_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"], LLAVA_CHAT_TEMPLATE,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
    )
    # Llama tokenizers prepend <s> to every encoded text; the template relies on that.
    bos = tokenizer.convert_tokens_to_ids("<s>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer


def _make_llava(out_dir: Path) -> Built:
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessorPil,
        LlavaProcessor,
    )

    tokenizer = _llava_tokenizer()
    bos, eos, pad, image = _ids(tokenizer, "<s>", "</s>", "<pad>", "<image>")
    config = LlavaConfig(
        text_config=_text_config("llama", tokenizer, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad),
        vision_config={
            "model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": LLAVA_IMAGE,
            "patch_size": LLAVA_PATCH, "projection_dim": 64,
        },
        image_token_index=image,
        image_seq_length=LLAVA_IMAGE_TOKENS,
        # The last layer (real LLaVA: the one before it) so that no vision weight goes unused.
        vision_feature_layer=-1,
    )
    built = save_model(LlavaForConditionalGeneration(config), out_dir, eos=[eos], pad=pad, bos=bos)
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": LLAVA_IMAGE}, crop_size={"height": LLAVA_IMAGE, "width": LLAVA_IMAGE}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    ).save_pretrained(out_dir)
    return Built(built.architecture, LLAVA_IMAGE_TOKENS)


# --------------------------------------------------------------------------- Idefics3

# HuggingFaceM4/Idefics3-8B-Llama3's template: "<|begin_of_text|>User:<image>...<end_of_utterance>".
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# A 64x64 SigLIP tower with 8x8 patches = 64 patches; pixel shuffle by 2 leaves 16 image tokens.
# Image splitting is off so that every image is one 64x64 tile and the count is fixed.
IDEFICS3_IMAGE, IDEFICS3_PATCH, IDEFICS3_SCALE = 64, 8, 2
IDEFICS3_IMAGE_TOKENS = (IDEFICS3_IMAGE // IDEFICS3_PATCH) ** 2 // IDEFICS3_SCALE**2
# The processor looks these up by name even when it does not split images.
_IDEFICS3_TILES = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]


def _make_idefics3(out_dir: Path) -> Built:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tokenizer = train_tokenizer(
        ["<|begin_of_text|>", "<|end_of_text|>", "<end_of_utterance>", "<fake_token_around_image>",
         "<image>", "<global-img>", *_IDEFICS3_TILES],
        IDEFICS3_CHAT_TEMPLATE,
        bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<|end_of_text|>",
    )
    bos, eos, end = _ids(tokenizer, "<|begin_of_text|>", "<end_of_utterance>", "<|end_of_text|>")
    image = tokenizer.convert_tokens_to_ids("<image>")
    config = Idefics3Config(
        text_config=_text_config("llama", tokenizer, bos_token_id=bos, eos_token_id=eos, pad_token_id=end),
        vision_config={
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": IDEFICS3_IMAGE, "patch_size": IDEFICS3_PATCH,
        },
        scale_factor=IDEFICS3_SCALE,
        image_token_id=image,
        pad_token_id=end,
    )
    built = save_model(Idefics3ForConditionalGeneration(config), out_dir, eos=[eos, end], pad=end, bos=bos)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IDEFICS3_IMAGE},
        max_image_size={"longest_edge": IDEFICS3_IMAGE},
    )
    Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IDEFICS3_IMAGE_TOKENS,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    ).save_pretrained(out_dir)
    return Built(built.architecture, IDEFICS3_IMAGE_TOKENS)


# --------------------------------------------------------------------------- GOT-OCR2

# stepfun-ai/GOT-OCR-2.0-hf builds its prompt in code; this template renders the same shape
# (system query, "<img><imgpad></img>" for the image) so the runner can treat it like the others.
GOT_SYSTEM = "You should follow the instructions carefully and explain your answers in detail."
GOT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + GOT_SYSTEM + "<|im_end|>{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<img><imgpad></img>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The processor always writes 256 image tokens per image (not configurable in the saved files), so
# the tower must yield 256 features: 128 px / 2 px patches = 64x64, two stride-2 convs -> 16x16.
GOT_IMAGE, GOT_PATCH, GOT_IMAGE_TOKENS = 128, 2, 256


def _make_got_ocr2(out_dir: Path) -> Built:
    from transformers import (
        GotOcr2Config,
        GotOcr2ForConditionalGeneration,
        GotOcr2ImageProcessorPil,
        GotOcr2Processor,
    )

    tokenizer = train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"],
        GOT_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>",
    )
    pad, eos, image = _ids(tokenizer, "<|endoftext|>", "<|im_end|>", "<imgpad>")
    config = GotOcr2Config(
        text_config=_text_config("qwen2", tokenizer, bos_token_id=pad, eos_token_id=eos),
        vision_config={
            "hidden_size": 64, "output_channels": 64, "mlp_dim": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": GOT_IMAGE, "patch_size": GOT_PATCH,
            # Windowed attention only and no absolute position table: a global layer over 64x64 =
            # 4096 patches, or a 64x64x64 position table, would cost more than the rest of the
            # model together, and the fixture only has to produce the right shapes.
            "window_size": 8, "global_attn_indexes": [], "use_abs_pos": False,
        },
        image_token_index=image,
        image_seq_length=GOT_IMAGE_TOKENS,
    )
    built = save_model(GotOcr2ForConditionalGeneration(config), out_dir, eos=[eos, pad], pad=pad)
    image_processor = GotOcr2ImageProcessorPil(size={"height": GOT_IMAGE, "width": GOT_IMAGE})
    GotOcr2Processor(image_processor, tokenizer, chat_template=GOT_CHAT_TEMPLATE).save_pretrained(out_dir)
    return Built(built.architecture, GOT_IMAGE_TOKENS)


# kind -> recipe writing a save_pretrained directory; the caller seeds torch beforehand.
RECIPES: dict[str, Callable[[Path], Built]] = {
    "qwen2_vl": lambda out_dir: _make_qwen(out_dir, "qwen2_vl"),
    "qwen2_5_vl": lambda out_dir: _make_qwen(out_dir, "qwen2_5_vl"),
    "llava": _make_llava,
    "idefics3": _make_idefics3,
    "got_ocr2": _make_got_ocr2,
}
