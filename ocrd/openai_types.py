"""The OpenAI chat wire as both ends of ocrd speak it: the daemon and the runner processes.

One set of request models (pydantic v2), validated in one of two configurations:

* the daemon (``ocrd.http.openai.protocol``) validates strictly: ``"stream": "yes"`` is an error,
  not ``True``, because a runner reached with a bad value fails later and less clearly; its
  ``ChatCompletionRequest`` also requires ``model``;
* a runner (``ocrd.worker``) validates the same fields leniently (``lenient=True``: JSON types are
  coerced), and ``model`` may be left out, since a runner serves one model. The daemon checked the
  requests it forwards already; benchmarks and tests talk to runners directly.

Both keep unknown fields (``extra="allow"``): a field ocrd does not know (``response_format``,
``repetition_penalty``, ...) is the runner's to judge. Content parts are the exception to
"unknown is allowed": only ``text`` and ``image_url`` parts pass, since any other kind
(``video_url``, ``input_audio``, ``file``) could carry a URL or a file that ``ocrd.http.images``
never sees and a runner would fetch unchecked. The token limit has one rule for both ends
(``token_limit``), and so do the end of a stream (``DONE``) and a client that hangs up
(``unless_disconnected``).

Runners import this module, so it imports nothing of ocrd but the error hierarchy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

MAX_TOKENS_CAP = 1_000_000
MAX_STOP_SEQUENCES = 4
Role = Literal["system", "user", "assistant", "developer", "tool"]

T = TypeVar("T")
Body = TypeVar("Body", bound=BaseModel)


# --- server-sent events -----------------------------------------------------------------------

# The event that ends every OpenAI stream, an error event included.
DONE = b"data: [DONE]\n\n"


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON (a chunk, or ``{"error": ...}``)."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


# --- a client that hangs up -------------------------------------------------------------------

# How often a request that waits for a whole answer asks whether its client is still there.
DISCONNECT_POLL_S = 0.25


async def unless_disconnected(
    work: Awaitable[T], is_disconnected: Callable[[], Awaitable[bool]]
) -> T | None:
    """``work``'s result; None if the client hung up first, after cancelling ``work``.

    A client waiting for a whole (non-streamed) answer is otherwise only noticed when the answer
    is written, after all the work. ``is_disconnected`` is Starlette's
    ``Request.is_disconnected``. The cancellation is what stops the work: the daemon's closes
    its connection to the runner, which the runner sees as its own client hanging up; the
    runner's tells its engine to stop generating.
    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
        return task.result()
    finally:
        task.cancel()  # a no-op once done; stops the work if we ourselves were cancelled


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


class _Request(BaseModel):
    # strict: the daemon's configuration; a runner validates with strict=False (``parse_body_as``).
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


# --- requests ---------------------------------------------------------------------------------


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Request):
    file_data: str | None = None  # a data: URL: data:application/pdf;base64,...
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Request):
    """OpenAI's file part: the daemon renders a PDF's pages into image parts before a runner sees
    the request (``ocrd.documents.chat_files``)."""

    type: Literal["file"]
    file: FileData


ContentPart = Annotated[
    Annotated[TextPart, Tag("<text>")] | Annotated[ImagePart, Tag("<image_url>")]
    | Annotated[FilePart, Tag("<file>")],
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


class OcrdExtension(_Request):
    """ocrd's own request field, ``"ocrd": {...}``: a client names a preset in it; the daemon,
    applying the preset, adds what only the runner understands."""

    preset: str | None = None
    # Arguments for the model's processor (GOT-OCR2 ``format``).
    processor_kwargs: dict[str, Any] = Field(default_factory=dict)
    # Whether special tokens stay in the text (MinerU, granite-docling); None: the runner's default.
    skip_special_tokens: bool | None = None


def token_limit(max_completion_tokens: int | None, max_tokens: int | None) -> int | None:
    """The completion-token cap a request asks for: ``max_completion_tokens`` (OpenAI's current
    name) wins over the deprecated ``max_tokens`` (as in vLLM), either alone is the cap."""
    return max_completion_tokens if max_completion_tokens is not None else max_tokens


class ChatRequest(_Request):
    """A ``/v1/chat/completions`` body (the daemon's ``ChatCompletionRequest`` requires
    ``model``; a runner serves one model and ignores it)."""

    model: str | None = None
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
    ocrd: OcrdExtension | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise PydanticCustomError(
                "n_unsupported", "ocrd returns one choice per request; set n to 1 or leave it out"
            )
        return value

    @field_validator("ocrd", mode="before")
    @classmethod
    def _ocrd_is_an_object(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Mapping):
            raise PydanticCustomError("ocrd_kind", 'must be an object, e.g. {"preset": "ocr"}')
        return value

    @property
    def token_limit(self) -> int | None:
        """The completion-token cap the client asked for (see ``token_limit``)."""
        return token_limit(self.max_completion_tokens, self.max_tokens)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


# --- parsing ----------------------------------------------------------------------------------


def parse_body_as(model: type[Body], raw: Any, *, lenient: bool = False) -> Body:
    """Validate a decoded JSON body as ``model``; errors become one ``InvalidRequest`` (400).
    ``lenient``: JSON types are coerced (``"2"`` for 2), as a runner accepts them."""
    if not isinstance(raw, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(raw, strict=False if lenient else None)
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
