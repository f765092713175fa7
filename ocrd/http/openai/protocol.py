"""What ocrd accepts and returns on its OpenAI-compatible API (pydantic v2 models).

The request models are ``ocrd.openai_types``, shared with the runners (which validate the same
fields leniently); the daemon validates strictly and requires ``model``, which it documents with
its pattern (``ChatCompletionRequest``). Responses allow extra fields: runners and upstreams add
their own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ocrd.model_ids import REQUEST_MODEL_PATTERN
from ocrd.openai_types import (
    ChatMessage,
    ChatRequest,
    ImagePart,
    ImageURL,
    OcrdExtension,
    StreamOptions,
    TextPart,
    invalid_request_from_errors,
    parse_body_as,
)

__all__ = [
    "ChatCompletion", "ChatCompletionRequest", "ChatMessage", "ErrorResponse", "ImagePart",
    "ImageURL", "ModelCard", "ModelList", "OcrdExtension", "OcrdModelInfo", "StreamOptions",
    "TextPart", "invalid_request_from_errors", "parse_body_as", "parse_chat_request",
]


class ChatCompletionRequest(ChatRequest):
    """``POST /v1/chat/completions`` as the daemon takes it (``ocrd.openai_types.ChatRequest``,
    validated strictly, with the model required)."""

    # The pattern is documentation (OpenAPI); ocrd.model_ids checks the name with clearer words.
    model: str = Field(min_length=1, json_schema_extra={"pattern": REQUEST_MODEL_PATTERN})


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- responses --------------------------------------------------------------------------------


class OcrdModelInfo(_Response):
    """ocrd's own facts about a model, under the ``ocrd`` key (OpenAI's schema allows extras)."""

    state: str
    engine: str | None = None
    aliases: list[str] = Field(default_factory=list)
    # The weights' licence as the model's card names it, and what it restricts; None when unknown.
    license: str | None = None
    license_note: str | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    ocrd: OcrdModelInfo | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class ChatCompletionMessage(_Response):
    role: Literal["assistant"]
    content: str | None = None


class ChatCompletionChoice(_Response):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None


class ChatCompletion(_Response):
    """What ``POST /v1/chat/completions`` answers without ``stream`` (OpenAI's shape; runners and
    upstreams may add fields)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: dict[str, Any] | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope, the body of every 4xx and 5xx."""

    error: ErrorDetail


# --- parsing ----------------------------------------------------------------------------------


def parse_chat_request(raw: Any) -> ChatCompletionRequest:
    """Validate a decoded ``/v1/chat/completions`` body; errors become ``InvalidRequest`` (400)."""
    return parse_body_as(ChatCompletionRequest, raw)
