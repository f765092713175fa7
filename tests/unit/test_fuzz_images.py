"""Hypothesis fuzzes the parsers hostile input meets first: image bytes and data URLs
(ocrd.http.images), JSON bodies and chat message structures (ocrd.http.openai.protocol), and model
names (ocrd.model_ids). Whatever comes in, what comes out is a result or a 4xx ``OcrdError`` that
fits OpenAI's error schema: never another exception, never a 5xx.

Reproducible and bounded: ``derandomize=True`` (the same inputs on every run), no example
database, a fixed number of examples, no deadline (run time is bounded by the count).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ocrd.config.settings import LimitsSettings
from ocrd.errors import InvalidRequest, OcrdError
from ocrd.http.images import prepare_images
from ocrd.http.json_body import parse_json_body
from ocrd.http.openai.protocol import ChatCompletionRequest, parse_chat_request
from ocrd.model_ids import check_model_name, is_model_id
from tests.support.openapi import validate

# Pillow warns about the damaged EXIF blocks these images are made of; the verdict is what counts.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
LIMITS = LimitsSettings(max_image_bytes=200_000, max_image_pixels=1_000_000, max_images_per_request=4)


def only_client_errors(call, *args, **kwargs):
    """``call(...)``'s result, or None when it raised a 4xx OcrdError; anything else fails."""
    try:
        return call(*args, **kwargs)
    except OcrdError as error:
        assert isinstance(error, InvalidRequest), repr(error)  # PayloadTooLarge is one too
        assert 400 <= error.http_status < 500, repr(error)
        validate("ErrorResponse", error.to_openai())
        return None


def seed_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((48, 32), 40).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: seed_image(fmt) for fmt in ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP")}


@st.composite
def damaged_images(draw) -> bytes:
    """A real image of some format, then cut, overwritten or extended at random places."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "overwrite", "insert"]))
        if kind == "cut":
            del data[at:]
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(patch)] = patch
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def chat_with(url: str) -> ChatCompletionRequest:
    return parse_chat_request({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})


def prepared(request: ChatCompletionRequest):
    return asyncio.run(prepare_images(request, LIMITS, False))


def as_data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@FUZZ
@given(st.one_of(st.binary(max_size=4096), damaged_images()),
       st.sampled_from(["image/png", "image/jpeg", "image/webp", "image/tiff", "image/gif"]))
def test_any_bytes_as_an_image_give_a_checked_image_or_a_client_error(data, mime):
    images = only_client_errors(prepared, chat_with(as_data_url(data, mime)))
    if images is not None:
        [image] = images
        assert 0 < image.width * image.height <= LIMITS.max_image_pixels
        assert image.nbytes == len(data)


@FUZZ
@given(st.one_of(
    st.text(max_size=300),
    st.builds(lambda head, body: f"data:{head},{body}", st.text(max_size=40), st.text(max_size=200)),
    st.builds(lambda scheme, rest: f"{scheme}:{rest}",
              st.sampled_from(["data", "file", "http", "https", "ftp", "gopher", "javascript", ""]),
              st.text(max_size=100)),
))  # fmt: skip
def test_any_image_url_gives_a_client_error_or_an_image(url):
    only_client_errors(prepared, chat_with(url))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "image_url", "url", "detail", "name",
                         "model", "messages", "x"]) | st.text(max_size=8),
        children, max_size=5),
    max_leaves=30,
)  # fmt: skip
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", "robot", 3, None])
PARTS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": JSONISH}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
        JSONISH, st.fixed_dictionaries({"url": st.one_of(JSONISH, st.just(as_data_url(SEEDS["PNG"])))}))}),
    JSONISH,
)  # fmt: skip
MESSAGES = st.lists(st.fixed_dictionaries(
    {"role": ROLES}, optional={"content": st.one_of(JSONISH, st.lists(PARTS, max_size=4)), "name": JSONISH}
), max_size=4)  # fmt: skip


@FUZZ
@given(st.fixed_dictionaries({"model": st.one_of(st.text(max_size=30), JSONISH), "messages": MESSAGES},
                             optional={"max_tokens": JSONISH, "temperature": JSONISH, "stream": JSONISH,
                                       "stop": JSONISH, "n": JSONISH, "seed": JSONISH}))
def test_any_message_structure_gives_a_request_or_a_client_error(raw):
    request = only_client_errors(parse_chat_request, raw)
    if request is not None:
        only_client_errors(prepared, request)
        only_client_errors(check_model_name, request.model, allow_preset=True)


@FUZZ
@given(st.one_of(
    st.binary(max_size=2000),
    JSONISH.map(lambda value: json.dumps(value).encode()),
    st.builds(lambda depth, inner: b"[" * depth + inner + b"]" * depth,
              st.integers(0, 3000), st.sampled_from([b"", b"1", b"NaN", b'"\\ud800"', b"{}"])),
))  # fmt: skip
def test_any_body_gives_a_json_object_or_a_client_error(body):
    value = only_client_errors(parse_json_body, body)
    assert value is None or isinstance(value, dict)


@FUZZ
@given(st.text(max_size=120))
def test_a_model_name_that_passes_cannot_be_a_path(name):
    checked = only_client_errors(check_model_name, name, allow_preset=True)
    if checked is not None:
        model = checked.rpartition(":")[0] if ":" in checked else checked
        assert is_model_id(model)
        assert ".." not in model and "\\" not in model and not model.startswith("/")
        assert model.count("/") <= 1 and model.isascii() and model.isprintable()
