"""Presets on the request path (ocrd.http.openai.presets) against the real catalog."""

from __future__ import annotations

import pytest

from ocrd.catalog import Catalog
from ocrd.errors import InvalidRequest
from ocrd.http.openai.presets import apply_preset, requested_preset

CATALOG = Catalog.load_default()
DOTS = CATALOG.resolve("dots.ocr")
GOT = CATALOG.resolve("got-ocr2")
PPOCR = CATALOG.resolve("ppocr")
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def request(*content, **fields):
    return {"model": "dots.ocr", "messages": [{"role": "user", "content": list(content)}], **fields}


def user_content(body):
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def test_named_preset_replaces_the_text_keeps_the_images_and_fills_sampling():
    body = apply_preset(request({"type": "text", "text": "Extract text"}, IMAGE), DOTS, "layout",
                        "transformers")

    content = user_content(body)
    assert content[0] == IMAGE
    assert content[1]["type"] == "text" and content[1]["text"] == DOTS.presets["layout"].prompt
    assert body["model"] == "rednote-hilab/dots.ocr"
    assert body["temperature"] == DOTS.sampling["temperature"]
    assert body["ocrd"]["preset"] == "layout"


def test_the_clients_own_sampling_wins_over_the_presets():
    body = apply_preset(request(IMAGE, temperature=0.7, max_tokens=12), DOTS, "ocr", "transformers")
    assert body["temperature"] == 0.7 and body["max_tokens"] == 12


def test_a_clients_max_completion_tokens_is_the_limit_the_presets_max_tokens_does_not_join():
    body = apply_preset(request(IMAGE, max_completion_tokens=12), DOTS, "ocr", "transformers")
    assert body["max_completion_tokens"] == 12 and "max_tokens" not in body
    assert apply_preset(request(IMAGE), DOTS, "ocr", "transformers")["max_tokens"] == (
        DOTS.sampling["max_tokens"])


def test_engine_specific_wrapping_is_applied_for_that_engine_only():
    on_vllm = user_content(apply_preset(request(IMAGE), DOTS, "ocr", "vllm"))[-1]["text"]
    on_transformers = user_content(apply_preset(request(IMAGE), DOTS, "ocr", "transformers"))[-1]["text"]
    assert on_vllm.startswith(DOTS.vllm.prompt_prefix) and DOTS.vllm.prompt_prefix
    assert not on_transformers.startswith(DOTS.vllm.prompt_prefix)


def test_an_image_without_text_gets_the_models_default_preset():
    body = apply_preset(request(IMAGE), DOTS, None, "transformers")
    assert body["ocrd"]["preset"] == DOTS.default_preset
    assert user_content(body)[-1]["text"].endswith(DOTS.presets[DOTS.default_preset].prompt)


def test_a_request_with_its_own_text_and_no_preset_is_forwarded_as_sent():
    sent = request({"type": "text", "text": "What colour is the logo?"}, IMAGE)
    body = apply_preset(sent, DOTS, None, "transformers")
    assert body == {**sent, "model": "rednote-hilab/dots.ocr"}
    assert "ocrd" not in body


def test_a_preset_without_a_prompt_sends_only_the_images_and_its_processor_arguments():
    body = apply_preset({**request(IMAGE), "model": "got-ocr2"}, GOT, "format", "transformers")
    assert user_content(body) == [IMAGE]
    assert body["ocrd"]["processor_kwargs"] == {"format": True}
    assert body["stop"] == list(GOT.presets["format"].stop)


def test_models_without_presets_pass_through():
    sent = {**request(IMAGE), "model": "ppocr"}
    assert apply_preset(sent, PPOCR, None, "builtin") == {**sent, "model": "builtin/ppocr"}


def test_the_original_request_is_not_modified():
    sent = request(IMAGE)
    apply_preset(sent, DOTS, "layout", "transformers")
    assert sent == request(IMAGE)


@pytest.mark.parametrize(
    ("body", "suffix", "expected"),
    [({}, None, None), ({}, "ocr", "ocr"), ({"ocrd": {"preset": "ocr"}}, None, "ocr"),
     ({"ocrd": {"preset": "ocr"}}, "ocr", "ocr")],
)
def test_the_preset_comes_from_the_suffix_or_the_ocrd_field(body, suffix, expected):
    assert requested_preset(body, suffix) == expected


@pytest.mark.parametrize(
    ("body", "suffix", "param"),
    [({"ocrd": "ocr"}, None, "ocrd"), ({"ocrd": {"preset": 3}}, None, "ocrd.preset"),
     ({"ocrd": {"preset": "layout"}}, "ocr", "ocrd.preset")],
)
def test_a_malformed_or_contradictory_preset_request_is_a_400_naming_the_field(body, suffix, param):
    with pytest.raises(InvalidRequest) as caught:
        requested_preset(body, suffix)
    assert caught.value.param == param


def test_an_unknown_preset_lists_the_models_presets():
    with pytest.raises(InvalidRequest) as caught:
        apply_preset(request(IMAGE), DOTS, "poetry", "transformers")
    assert "layout" in caught.value.message
