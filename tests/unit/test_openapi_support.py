"""tests/support/openapi.py really validates: known-good instances pass, known-bad ones fail."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.support import openapi
from tests.support.openapi import SchemaMismatch, to_json_schema, validate

CHAT_COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "builtin/ppocr",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}

CHUNK = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "builtin/ppocr",
    "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "He"}, "logprobs": None,
         "finish_reason": None}
    ],
    "usage": None,
}  # fmt: skip

USAGE_CHUNK = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "builtin/ppocr",
    "choices": [],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}

MODEL = {"id": "builtin/ppocr", "object": "model", "created": 1700000000, "owned_by": "ocrd"}
MODEL_WITH_EXTRAS = {**MODEL, "ocrd": {"state": "ready", "engine": "builtin", "aliases": ["ppocr"]}}
MODEL_LIST = {"object": "list", "data": [MODEL, MODEL_WITH_EXTRAS]}
ERROR = {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}

GOOD = [
    ("CreateChatCompletionResponse", CHAT_COMPLETION),
    ("CreateChatCompletionStreamResponse", CHUNK),
    ("CreateChatCompletionStreamResponse", USAGE_CHUNK),
    ("ListModelsResponse", MODEL_LIST),
    ("ListModelsResponse", {"object": "list", "data": []}),
    ("Model", MODEL),
    ("Model", MODEL_WITH_EXTRAS),
    ("ErrorResponse", ERROR),
    ("ErrorResponse", {"error": {"message": "m", "type": "t", "param": "model", "code": "x"}}),
]


def _with(instance: dict, path: str, value: object) -> dict:
    """A deep copy of ``instance`` with the dotted ``path`` set to ``value`` (or deleted)."""
    result = copy.deepcopy(instance)
    *parents, last = path.split(".")
    node = result
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return result


_DELETE = object()

BAD = [
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "choices", _DELETE)),
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "object", "chat.completion.chunk")),
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "created", "yesterday")),
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "choices.0.finish_reason", "done")),
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "choices.0.message.content", 5)),
    ("CreateChatCompletionResponse", _with(CHAT_COMPLETION, "usage.total_tokens", "12")),
    ("CreateChatCompletionStreamResponse", _with(CHUNK, "choices.0.delta", _DELETE)),
    ("CreateChatCompletionStreamResponse", _with(CHUNK, "choices.0.finish_reason", "done")),
    ("CreateChatCompletionStreamResponse", _with(CHUNK, "usage", "none")),
    ("CreateChatCompletionStreamResponse", _with(CHUNK, "choices.0.logprobs", "none")),
    ("CreateChatCompletionStreamResponse", _with(USAGE_CHUNK, "object", "chat.completion")),
    ("ListModelsResponse", _with(MODEL_LIST, "object", "models")),
    ("ListModelsResponse", _with(MODEL_LIST, "data.0.id", _DELETE)),
    ("ListModelsResponse", {"object": "list", "data": {"id": "x"}}),
    ("Model", _with(MODEL, "created", "2024-01-01")),
    ("Model", _with(MODEL, "owned_by", _DELETE)),
    ("Model", _with(MODEL, "object", "engine")),
    ("ErrorResponse", _with(ERROR, "error.param", _DELETE)),
    ("ErrorResponse", _with(ERROR, "error.message", 42)),
    ("ErrorResponse", {"detail": "Not Found"}),
]


@pytest.mark.parametrize(("schema", "instance"), GOOD)
def test_known_good_instances_validate(schema, instance):
    validate(schema, instance)


@pytest.mark.parametrize(("schema", "instance"), BAD)
def test_known_bad_instances_are_rejected_with_the_place_named(schema, instance):
    with pytest.raises(SchemaMismatch, match=schema):
        validate(schema, instance)


def test_unknown_schema_name_is_an_error_not_a_pass():
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate("NoSuchSchema", {})


def test_missing_document_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv(openapi.SPEC_ENV, str(tmp_path / "absent.json"))
    with pytest.raises(FileNotFoundError, match="OCRD_OPENAPI_SPEC"):
        openapi.load_spec(openapi.spec_path())


def test_the_document_ships_in_the_repository_at_the_pinned_commit_with_its_licence():
    repo = Path(__file__).resolve().parents[2]
    vendored = repo / "tests" / "data" / "openai-openapi"
    assert openapi.DEFAULT_SPEC == vendored / "openapi.json.gz"
    assert hashlib.sha256(openapi.spec_bytes(openapi.DEFAULT_SPEC)).hexdigest() == openapi.SPEC_SHA256
    assert "The MIT License" in (vendored / "LICENSE").read_text(encoding="utf-8")
    assert openapi.SPEC_COMMIT in (vendored / "README.md").read_text(encoding="utf-8")


def _accepts(schema: dict, instance: object) -> bool:
    return Draft202012Validator(to_json_schema(schema)).is_valid(instance)


def test_nullable_type_accepts_null_and_keeps_its_constraints():
    schema = {"type": "string", "enum": ["stop", "length"], "nullable": True, "description": "d"}
    assert _accepts(schema, None)
    assert _accepts(schema, "stop")
    assert not _accepts(schema, "done")
    assert not _accepts(schema, 3)


def test_nullable_ref_sibling_accepts_null_and_still_checks_the_target():
    schema = {
        "$defs": {"Usage": {"type": "object", "required": ["n"]}},
        "properties": {"usage": {"$ref": "#/$defs/Usage", "nullable": True}},
    }
    assert _accepts(schema, {"usage": None})
    assert _accepts(schema, {"usage": {"n": 1}})
    assert not _accepts(schema, {"usage": {}})


def test_allof_with_a_bare_nullable_member_means_target_or_null():
    schema = {
        "$defs": {"T": {"type": "object", "required": ["k"]}},
        "allOf": [{"$ref": "#/$defs/T"}, {"nullable": True}],
    }
    assert _accepts(schema, None)
    assert _accepts(schema, {"k": 1})
    assert not _accepts(schema, {})


def test_property_named_nullable_is_not_taken_for_the_keyword():
    schema = {"type": "object", "properties": {"nullable": {"type": "boolean"}}}
    assert to_json_schema(schema) == schema
    assert not _accepts(schema, {"nullable": "yes"})


def test_boolean_exclusive_minimum_becomes_a_2020_12_bound():
    schema = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert not _accepts(schema, 0)
    assert _accepts(schema, 0.5)
    assert _accepts({"type": "number", "minimum": 0, "exclusiveMinimum": False}, 0)


def test_real_document_nullable_allof_is_rewritten():
    # RunObject.truncation_strategy is `allOf: [{$ref}, {nullable: true}]` in OpenAI's document.
    registry_doc = openapi._registry().contents(openapi._URI)
    prop = registry_doc["components"]["schemas"]["RunObject"]["properties"]["truncation_strategy"]
    assert {"type": "null"} in prop["anyOf"]
