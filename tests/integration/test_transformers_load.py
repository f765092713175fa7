"""The transformers runner's checks before weights load, its processor fallback and its prompts.

Real transformers classes and tiny random-weight fixtures built here; no runner subprocess.
"""

from __future__ import annotations

import os
import sys

import pytest
from PIL import Image

from ocrd.errors import InvalidRequest, ModelLoadFailed
from ocrd.worker.engines import ChatInput
from ocrd.worker.transformers_generate import Runtime, prepare_inputs, to_conversation
from ocrd.worker.transformers_options import parse_options

os.environ.setdefault("OMP_NUM_THREADS", "1")


def options(**overrides):
    return parse_options({"repo_id": "org/name", "device": "cpu", **overrides})


# --- checks before any weights -------------------------------------------------------------------


def test_an_architecture_that_is_not_image_text_to_text_is_named():
    from transformers import GPT2Config

    from ocrd.worker.transformers_load import model_class

    with pytest.raises(ModelLoadFailed, match="config.json names architecture GPT2LMHeadModel, which transformers"
                                              r" \S+ cannot load as image-text-to-text"):
        model_class(GPT2Config(architectures=["GPT2LMHeadModel"]), options())


def test_image_text_to_text_architectures_get_the_auto_class():
    from transformers import AutoModelForImageTextToText, LlavaConfig

    from ocrd.worker.transformers_load import model_class

    assert model_class(LlavaConfig(), options()) is AutoModelForImageTextToText


def test_missing_bitsandbytes_is_one_clear_error(monkeypatch):
    from ocrd.worker.transformers_load import check_quantization_packages

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # "import bitsandbytes" now raises ImportError
    check_quantization_packages("none")  # not needed without quantization
    with pytest.raises(ModelLoadFailed) as caught:
        check_quantization_packages("4bit")
    message = caught.value.message
    assert "4bit quantization needs the bitsandbytes package" in message and "pip install bitsandbytes" in message
    assert "\n" not in message


def test_an_already_quantized_model_is_refused():
    from transformers import AutoModelForImageTextToText, LlavaConfig

    from ocrd.worker.transformers_load import plan_quantization

    config = LlavaConfig()
    config.quantization_config = {"quant_method": "awq", "bits": 4}
    with pytest.raises(ModelLoadFailed, match=r"already quantized \(awq\)"):
        plan_quantization(AutoModelForImageTextToText, config, options(quantization="8bit"))


def test_only_the_language_model_is_quantized(tiny_models):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ocrd.worker.transformers_load import plan_quantization

    config = AutoConfig.from_pretrained(tiny_models["llava"].snapshot)
    plan = plan_quantization(AutoModelForImageTextToText, config, options(quantization="4bit"))
    assert plan.skip_modules == ("lm_head", "model.multi_modal_projector", "model.vision_tower")
    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config)
    language_model = skeleton.model.language_model
    assert plan.layers == sum(type(module) is torch.nn.Linear for module in language_model.modules()) > 0
    assert plan_quantization(AutoModelForImageTextToText, config, options(quantization="none")) is None


class NoLinearModel:
    """Stands in for an auto class whose model has only convolutions and embeddings."""

    @staticmethod
    def from_config(config, **kwargs):
        import torch

        return torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Conv1d(8, 8, 3))


def test_a_model_without_linear_layers_cannot_be_quantized():
    from transformers import LlavaConfig

    from ocrd.worker.transformers_load import plan_quantization

    with pytest.raises(ModelLoadFailed, match="no linear layers bitsandbytes can quantize"):
        plan_quantization(NoLinearModel, LlavaConfig(), options(quantization="8bit"))


def test_cpu_placement_defaults_to_float32_and_refuses_a_missing_gpu():
    import torch

    from ocrd.worker.transformers_load import placement

    place = placement(options(device="auto", attn_implementation="flash_attention_2"))
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    assert (place.device, place.dtype_name, place.attn_implementation) == ("cpu", "float32", None)
    assert placement(options(dtype="bfloat16", attn_implementation="eager")).attn_implementation == "eager"
    with pytest.raises(ModelLoadFailed, match="device cuda:0 was asked for, but this torch"):
        placement(options(device="cuda:0"))


# --- processors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.support.tiny_models import build_tiny_model

    hub = tmp_path_factory.mktemp("hub")
    return {kind: build_tiny_model(kind, hub) for kind in ("qwen2_vl", "llava", "got_ocr2")}


def _processor(model):
    from ocrd.worker.transformers_processor import load_processor

    hub = model.snapshot.parents[2]
    return load_processor(model.repo_id, model.snapshot, {"cache_dir": str(hub), "local_files_only": True})


def test_qwen2_vl_without_torchvision_gets_an_image_only_processor(tiny_models):
    if _torchvision_works():
        pytest.skip("torchvision works here: the full processor loads")
    processor, image_only = _processor(tiny_models["qwen2_vl"])
    assert image_only and type(processor).__name__ == "Qwen2VLProcessorImageOnly"
    assert processor.video_processor is None and processor.chat_template
    runtime = Runtime(model=None, processor=processor, device="cpu", dtype=None, max_new_tokens=4)
    inputs = prepare_inputs(runtime, _chat(2))
    assert inputs["image_grid_thw"].shape[0] == 2  # both images made it through


def test_processors_that_need_no_video_load_whole(tiny_models):
    processor, image_only = _processor(tiny_models["llava"])
    assert not image_only and type(processor).__name__ == "LlavaProcessor"


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401 - whether it imports is the question
    except Exception:
        return False
    return True


def _chat(images: int, text: str = "Read this.") -> ChatInput:
    pictures = [Image.new("RGB", (96, 64), "white"), Image.new("RGB", (40, 90), "gray")][:images]
    content = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": "-"}}] * images
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    return ChatInput(messages=messages, images=pictures, prompt=text, all_text=["Be brief.", text])


def test_got_ocr2_without_a_chat_template_builds_its_own_prompt(tiny_models):
    processor, _ = _processor(tiny_models["got_ocr2"])
    processor.chat_template = None  # as published: GOT-OCR-2.0-hf builds its prompt in code
    runtime = Runtime(model=None, processor=processor, device="cpu", dtype=None, max_new_tokens=4)
    assert runtime.prompt_mode == "processor"
    image_tokens = [(prepare_inputs(runtime, _chat(n))["input_ids"] == processor.image_token_id).sum() for n in (1, 2)]
    assert image_tokens == [256, 512]  # two images: GOT's multi-page mode, one prompt
    with pytest.raises(InvalidRequest, match="reads images only"):
        prepare_inputs(runtime, _chat(0))


def test_got_ocr2_with_a_chat_template_takes_several_images(tiny_models):
    processor, _ = _processor(tiny_models["got_ocr2"])
    runtime = Runtime(model=None, processor=processor, device="cpu", dtype=None, max_new_tokens=4)
    assert runtime.prompt_mode == "chat"
    inputs = prepare_inputs(runtime, _chat(2))
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 512


def test_openai_messages_become_the_processor_chat_format():
    image = Image.new("RGB", (8, 8))
    messages = [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "old"}},
                                     {"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "text", "text": "c"}, {"type": "image_url", "image_url": {"url": "x"}}]},
    ]
    assert to_conversation(messages, [image]) == [
        {"role": "system", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},  # earlier images are not decoded
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "text", "text": "c"}, {"type": "image", "image": image}]},
    ]


def test_text_that_breaks_the_processor_is_a_400(tiny_models):
    processor, _ = _processor(tiny_models["llava"])
    runtime = Runtime(model=None, processor=processor, device="cpu", dtype=None, max_new_tokens=4)
    # An image placeholder typed by the user leaves more placeholders than images.
    with pytest.raises(InvalidRequest, match="processor rejected the request"):
        prepare_inputs(runtime, _chat(1, text=f"look: {processor.image_token}"))

