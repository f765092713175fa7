"""What ocrd accepts and returns on its OpenAI-compatible API (pydantic v2 models).

Requests are validated here and then forwarded to a runner, so request models allow unknown
fields (``extra="allow"``) and keep them: a field ocrd does not know (``response_format``,
``repetition_penalty``, ...) is the runner's to judge. Fields ocrd does know are checked
strictly (``"stream": "yes"`` is an error, not ``True``), because a runner reached with a bad value
fails later and less clearly. Content parts are the exception to "unknown is allowed": only
``text`` and ``image_url`` parts pass, since any other kind (``video_url``, ``input_audio``,
``file``) could carry a URL or a file that ``ocrd.http.images`` never sees and a runner would fetch
unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ocrd.errors import InvalidRequest
from ocrd.model_ids import REQUEST_MODEL_PATTERN

MAX_TOKENS_CAP = 1_000_000
MAX_STOP_SEQUENCES = 4
Role = Literal["system", "user", "assistant", "developer", "tool"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


_Body = TypeVar("_Body", bound=BaseModel)


# --- union helpers ----------------------------------------------------------------------------
# Plain ``str | list[...]`` unions report one error per member ("should be a valid string" next to
# the real problem deep in the list). A callable discriminator picks the member from the Python
# type, so only the relevant errors come back. Its tags show up in error locations, so they are
# written as ``<...>``, which no field name can be, and ``_param`` drops them.


def _json_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "<str>"
    if isinstance(value, list):
        return "<list>"
    return None


def _part_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return f"<{value.get('type')}>"
    return None


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[
    Annotated[TextPart, Tag("<text>")] | Annotated[ImagePart, Tag("<image_url>")],
    Discriminator(
        _part_kind,
        custom_error_type="content_part_type",
        custom_error_message="content part type is not supported",
    ),
]
Content = Annotated[
    Annotated[str, Tag("<str>")] | Annotated[list[ContentPart], Tag("<list>"), Field(min_length=1)],
    Discriminator(
        _json_kind,
        custom_error_type="content_kind",
        custom_error_message="content must be a string or a list of content parts",
    ),
]
Stop = Annotated[
    Annotated[str, Tag("<str>")]
    | Annotated[list[str], Tag("<list>"), Field(max_length=MAX_STOP_SEQUENCES)],
    Discriminator(
        _json_kind,
        custom_error_type="stop_kind",
        custom_error_message="stop must be a string or a list of up to 4 strings",
    ),
]


def _content_documented_as_required(schema: dict[str, Any]) -> None:
    # Documented as always sent (null only makes sense for an assistant turn): closer to what
    # _content_required enforces than "optional", so that generated requests get past it.
    schema["required"] = sorted({*schema.get("required", ()), "content"})


class ChatMessage(_Request):
    model_config = ConfigDict(json_schema_extra=_content_documented_as_required)

    role: Role
    # Optional only for assistant messages (OpenAI allows an assistant turn of tool calls alone).
    content: Content | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError(
                "content_missing", "a {role} message needs content", {"role": self.role}
            )
        return self


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    # The pattern is documentation (OpenAPI); ocrd.model_ids checks the name with clearer words.
    model: str = Field(min_length=1, json_schema_extra={"pattern": REQUEST_MODEL_PATTERN})
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stop: Stop | None = None
    # Bounded to 64 bits: runners hand the seed to torch / vLLM, which overflow past that.
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise PydanticCustomError(
                "n_unsupported", "ocrd returns one choice per request; set n to 1 or leave it out"
            )
        return value

    @property
    def token_limit(self) -> int | None:
        """The completion-token cap the client asked for (the newer field wins)."""
        return self.max_completion_tokens or self.max_tokens


# --- responses --------------------------------------------------------------------------------


class OcrdModelInfo(_Response):
    """ocrd's own facts about a model, under the ``ocrd`` key (OpenAI's schema allows extras)."""

    state: str
    engine: str | None = None
    aliases: list[str] = Field(default_factory=list)


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


def parse_body_as(model: type[_Body], raw: Any) -> _Body:
    """Validate a decoded JSON body as ``model``; errors become one ``InvalidRequest`` (400)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request_from_errors(exc.errors(include_url=False)) from None


def _param(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("<")))


# Errors raised by a model-level check name the model; these say which field they are about.
_FIELD_OF_ERROR = {"content_missing": "content", "content_part_type": "type"}


def invalid_request_from_errors(
    errors: Sequence[Mapping[str, Any]], *, drop: tuple[str, ...] = ()
) -> InvalidRequest:
    """One readable ``InvalidRequest`` from pydantic/FastAPI error dicts; ``param`` = dotted path.

    ``drop`` removes a leading location part such as FastAPI's ``"body"``.
    """
    if not errors:
        return InvalidRequest("the request is invalid")
    first = errors[0]
    loc = list(first.get("loc", ()))
    if loc and loc[0] in drop:
        loc = loc[1:]
    if first.get("type") in _FIELD_OF_ERROR and isinstance(first.get("input"), Mapping):
        loc.append(_FIELD_OF_ERROR[first["type"]])
    param = _param(loc) or None
    message = f"{param}: {_message(first)}" if param else _message(first)
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidRequest(message, param=param)


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "content_part_type":
        value = error.get("input")
        if not isinstance(value, Mapping):
            return "each content part must be an object with a 'type'"
        found = value.get("type")
        return (
            f"content part type {found!r} is not supported; "
            "ocrd accepts 'text' and 'image_url' parts"
        )
    if kind == "missing":
        return "this field is required"
    if kind == "extra_forbidden":
        return "unknown field"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")
