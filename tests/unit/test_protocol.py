"""What /v1/chat/completions accepts, and how a refusal reads (ocrd.http.openai.protocol)."""

from __future__ import annotations

import math

import pytest

from ocrd.errors import InvalidRequest
from ocrd.http.json_body import parse_json_body
from ocrd.http.openai.protocol import (
    ImagePart,
    ModelCard,
    ModelList,
    OcrdModelInfo,
    TextPart,
    parse_chat_request,
)
from tests.support.openapi import validate

PNG_URL = "data:image/png;base64,iVBORw0KGgo="


def body(**fields) -> dict:
    base = {"model": "builtin/ppocr", "messages": [{"role": "user", "content": "Read this."}]}
    return {**base, **fields}


def refused(raw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(raw)
    error = info.value
    assert error.http_status == 400
    validate("ErrorResponse", error.to_openai())
    return error


def test_minimal_request_has_openai_defaults():
    request = parse_chat_request(body())
    assert request.model == "builtin/ppocr"
    assert request.stream is False
    assert request.n is None and request.stop is None and request.token_limit is None
    assert request.messages[0].content == "Read this."


def test_text_and_image_parts_are_typed():
    content = [
        {"type": "text", "text": "What does it say?"},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}},
    ]
    request = parse_chat_request(body(messages=[{"role": "user", "content": content}]))
    text, image = request.messages[0].content
    assert isinstance(text, TextPart) and text.text == "What does it say?"
    assert isinstance(image, ImagePart)
    assert image.image_url.url == PNG_URL and image.image_url.detail == "high"


def test_unknown_fields_are_kept_for_the_runner_at_every_level():
    raw = body(
        messages=[
            {"role": "system", "content": "Be terse.", "x_note": 1},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": PNG_URL, "uuid": "u1"}, "cache": 2}
                ],
            },
        ],
        response_format={"type": "json_object"},
        repetition_penalty=1.05,
    )
    forwarded = parse_chat_request(raw).model_dump(exclude_unset=True)
    assert forwarded == raw


@pytest.mark.parametrize("role", ["system", "user", "assistant", "developer", "tool"])
def test_every_openai_role_is_accepted(role):
    request = parse_chat_request(body(messages=[{"role": role, "content": "x"}]))
    assert [(message.role, message.content) for message in request.messages] == [(role, "x")]


def test_assistant_may_omit_content_but_user_may_not():
    parse_chat_request(body(messages=[{"role": "assistant", "tool_calls": []}]))
    error = refused(body(messages=[{"role": "user"}]))
    assert error.param == "messages.0.content"
    assert "user message needs content" in error.message


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (body(model=""), "model"),
        (body(messages=[]), "messages"),
        (body(messages="hello"), "messages"),
        (body(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
        (body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (body(messages=[{"role": "user", "content": []}]), "messages.0.content"),
        (body(messages=[{"role": "user", "content": ["text"]}]), "messages.0.content.0"),
        (body(stream="true"), "stream"),
        (body(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=1_000_001), "max_tokens"),
        (body(max_tokens=5.0), "max_tokens"),
        (body(max_completion_tokens=0), "max_completion_tokens"),
        (body(temperature=-0.1), "temperature"),
        (body(temperature=2.01), "temperature"),
        (body(temperature=True), "temperature"),
        (body(top_p=0), "top_p"),
        (body(top_p=1.5), "top_p"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(stop=7), "stop"),
        (body(stop=["a", 1]), "stop.1"),
        (body(seed=2**64), "seed"),
        (body(user=3), "user"),
    ],
)
def test_bad_field_is_refused_with_its_dotted_path(raw, param):
    error = refused(raw)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")


def test_bad_image_url_names_the_exact_part():
    content = [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": 3}},
    ]
    error = refused(body(messages=[{"role": "user", "content": content}]))
    assert error.param == "messages.0.content.1.image_url.url"
    assert "valid string" in error.message
    assert "(and" not in error.message  # the union's other member adds no noise


def test_unsupported_part_type_is_refused_since_ocrd_could_not_check_it():
    part = {"type": "video_url", "video_url": {"url": "http://10.0.0.1/v.mp4"}}
    error = refused(body(messages=[{"role": "user", "content": [part]}]))
    assert error.param == "messages.0.content.0.type"
    assert "'video_url' is not supported" in error.message
    assert "'text' and 'image_url'" in error.message


@pytest.mark.parametrize("n", [0, 2, 5])
def test_n_other_than_one_says_ocrd_returns_one_choice(n):
    error = refused(body(n=n))
    assert error.param == "n"
    assert "one choice" in error.message


def test_accepted_sampling_values_at_their_bounds():
    request = parse_chat_request(
        body(n=1, temperature=0, top_p=1, max_tokens=1_000_000, stop=["a", "b", "c", "d"], seed=-1)
    )
    assert request.temperature == 0 and request.top_p == 1 and request.n == 1
    assert parse_chat_request(body(temperature=2, stop="END")).stop == "END"


def test_token_limit_prefers_max_completion_tokens():
    assert parse_chat_request(body(max_tokens=10)).token_limit == 10
    assert parse_chat_request(body(max_tokens=10, max_completion_tokens=20)).token_limit == 20


def test_stream_options():
    request = parse_chat_request(body(stream=True, stream_options={"include_usage": True}))
    assert request.stream and request.stream_options.include_usage


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_in_known_fields(value):
    assert refused(body(temperature=value)).param == "temperature"


def test_non_finite_numbers_are_refused_in_forwarded_unknown_fields():
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(b'{"model": "m", "logit_bias": {"50256": -Infinity}}')
    assert caught.value.param == "logit_bias.50256"
    assert "NaN and infinite" in caught.value.message


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_json_body_names_where_a_non_finite_number_is(constant):
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(b'{"messages": [{"x": 1}], "temperature": ' + constant + b"}")
    assert caught.value.param == "temperature"


def test_several_problems_are_counted_after_the_first():
    error = refused(body(temperature=9, top_p=9, max_tokens=0))
    assert "(and 2 more problems)" in error.message


@pytest.mark.parametrize("raw", [[], "text", None])
def test_body_that_is_not_an_object_is_refused(raw):
    assert "JSON object" in refused(raw).message


def test_parse_json_body_accepts_an_object():
    assert parse_json_body(b'{"model": "m", "x": [1.5]}') == {"model": "m", "x": [1.5]}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b'{"temperature": NaN}', "NaN and infinite numbers are not allowed"),
        (b'{"temperature": Infinity}', "NaN and infinite numbers are not allowed"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_parse_json_body_refusals(raw, says):
    with pytest.raises(InvalidRequest, match=says):
        parse_json_body(raw)


def test_model_list_matches_openai_schema_with_ocrd_extras():
    cards = ModelList(
        data=[
            ModelCard(
                id="rednote-hilab/dots.ocr",
                created=1700000000,
                owned_by="rednote-hilab",
                ocrd=OcrdModelInfo(state="ready", engine="vllm", aliases=["dots.ocr"]),
            ),
            ModelCard(id="builtin/ppocr", created=0, owned_by="ocrd"),
        ]
    ).model_dump(mode="json")
    validate("ListModelsResponse", cards)
    validate("Model", cards["data"][0])
    assert cards["data"][0]["ocrd"] == {"state": "ready", "engine": "vllm", "aliases": ["dots.ocr"],
                                        "license": None, "license_note": None}
    assert cards["object"] == "list" and cards["data"][1]["object"] == "model"
