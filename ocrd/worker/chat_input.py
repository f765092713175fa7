"""Parsing an OpenAI chat-completion request inside a runner: validation and image decoding.

The daemon validates requests before forwarding them, but a runner is an HTTP server of its own
(benchmarks and tests talk to it directly), so anything malformed here is still a 400 with
OpenAI's error envelope, never a 500. Runners only take images as ``data:`` URLs: fetching
remote URLs is the daemon's job, where the policy about which hosts are allowed lives.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocrd.errors import InvalidRequest, PayloadTooLarge
from ocrd.worker.engines import ChatInput, GenerationParams


class _Lenient(BaseModel):
    # Clients send fields this runner has no use for (tools, user, metadata...): ignore them.
    model_config = ConfigDict(extra="allow")


class ImageUrl(_Lenient):
    url: str


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    image_url: ImageUrl | None = None


class Message(_Lenient):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class OcrdExtras(_Lenient):
    """ocrd's own request field, filled by the daemon when it applies a preset."""

    preset: str | None = None
    processor_kwargs: dict[str, Any] = Field(default_factory=dict)
    skip_special_tokens: bool | None = None


class ChatRequest(_Lenient):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    ocrd: OcrdExtras | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def params(self) -> GenerationParams:
        limits = [m for m in (self.max_tokens, self.max_completion_tokens) if m is not None]
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_tokens=min(limits) if limits else None,
            stop=stop,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            processor_kwargs=dict(self.ocrd.processor_kwargs) if self.ocrd else {},
            skip_special_tokens=self.ocrd.skip_special_tokens if self.ocrd else None,
        )


def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``; InvalidRequest naming the offending field otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _dotted(first["loc"]) or None
        raise InvalidRequest(f"{param or 'request'}: {first['msg']}", param=param) from None
    if request.n not in (None, 1):
        raise InvalidRequest("only n=1 is supported", param="n")
    return request


def _dotted(loc: tuple[Any, ...]) -> str:
    # Pydantic puts union member names ("str", "list[ContentPart]") in locations; drop them.
    parts = [p for p in loc if isinstance(p, int) or not any(c in p for c in "[]") and p != "str"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def chat_input(request: ChatRequest) -> ChatInput:
    """Texts and decoded images; images come from the last user message only."""
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("the request has no message with role 'user'", param="messages")
    all_text: list[str] = []
    prompt: list[str] = []
    images: list[Image.Image] = []
    for i, message in enumerate(request.messages):
        for j, part in enumerate(_parts(message)):
            where = f"messages[{i}].content[{j}]"
            if part.type == "text":
                all_text.append(part.text or "")
                if i == last_user:
                    prompt.append(part.text or "")
            elif part.type == "image_url" and part.image_url is not None:
                if i == last_user:
                    images.append(decode_image(part.image_url.url, where + ".image_url.url"))
            else:
                problem = f"{where}: content parts of type {part.type!r} are not supported"
                raise InvalidRequest(problem, param=where)
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    return ChatInput(messages=messages, images=images, prompt="\n".join(prompt), all_text=all_text)


def _parts(message: Message) -> list[ContentPart]:
    if isinstance(message.content, str):
        return [ContentPart(type="text", text=message.content)]
    return message.content or []


def _bad_image(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param, code="invalid_image")


def decode_image(url: str, param: str) -> Image.Image:
    """An RGB image from a base64 ``data:`` URL."""
    if not url.startswith("data:"):
        raise _bad_image(param, "runners only accept images as data: URLs")
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _bad_image(param, "expected a base64 data URL like data:image/png;base64,...")
    try:
        raw = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_image(param, "the data URL is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            opened.load()
            return _to_rgb(ImageOps.exif_transpose(opened))
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{param}: {exc}", param=param) from None
    except Exception as exc:  # Pillow raises many kinds on corrupt input; all mean "bad image"
        detail = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise _bad_image(param, f"not a decodable image (PNG, JPEG, WebP, TIFF, ...): {detail}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparent areas made white: OCR of dark text on a transparent PNG must still work."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
