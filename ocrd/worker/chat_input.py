"""Parsing an OpenAI chat-completion request inside a runner: validation and image decoding.

The daemon validates requests before forwarding them, but a runner is an HTTP server of its own
(benchmarks and tests talk to it directly), so anything malformed here is still a 400 with
OpenAI's error envelope, never a 500. The fields and their rules (the token limit among them) are
the daemon's own (``ocrd.openai_types``), validated leniently. Runners only take images as
``data:`` URLs: fetching remote URLs is the daemon's job, where the policy about which hosts are
allowed lives.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import pybase64
from PIL import Image, ImageOps, UnidentifiedImageError

from ocrd.errors import InvalidRequest, PayloadTooLarge
from ocrd.openai_types import ChatMessage, ChatRequest, ContentPart, FilePart, TextPart, parse_body_as
from ocrd.worker.engines import ChatInput, GenerationParams


def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``, validated leniently (``ocrd.openai_types``); InvalidRequest
    naming the offending field otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    return parse_body_as(ChatRequest, data, lenient=True)


def generation_params(request: ChatRequest) -> GenerationParams:
    """What the engine needs of ``request``: limits, sampling, and what a preset added."""
    extension = request.ocrd
    return GenerationParams(
        max_tokens=request.token_limit,
        stop=request.stop_strings,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        processor_kwargs=dict(extension.processor_kwargs) if extension else {},
        skip_special_tokens=extension.skip_special_tokens if extension else None,
    )


class OpenedChat:
    """A request's texts and its images opened (headers read, pixels not yet decoded): what
    decoding will cost is known (``pixels``) before ``decode`` pays it."""

    def __init__(self, messages: list[dict], images: list[tuple[Image.Image, str]], prompt: str,
                 all_text: list[str]):
        self._messages = messages
        self._images = images  # (image, its parameter's name for errors)
        self._prompt = prompt
        self._all_text = all_text

    @property
    def pixels(self) -> int:
        return sum(image.width * image.height for image, _ in self._images)

    def decode(self) -> ChatInput:
        images = [decode_opened(image, param) for image, param in self._images]
        return ChatInput(messages=self._messages, images=images, prompt=self._prompt, all_text=self._all_text)


def open_chat(request: ChatRequest) -> OpenedChat:
    """Texts and opened images; images come from the last user message only."""
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("the request has no message with role 'user'", param="messages")
    all_text: list[str] = []
    prompt: list[str] = []
    images: list[tuple[Image.Image, str]] = []
    for i, message in enumerate(request.messages):
        for j, part in enumerate(_parts(message)):
            if isinstance(part, TextPart):
                all_text.append(part.text)
                if i == last_user:
                    prompt.append(part.text)
            elif isinstance(part, FilePart):  # the daemon turns PDFs into pages before forwarding
                raise InvalidRequest("runners take images only: send the PDF through ocrd, which renders "
                                     "its pages, or as image_url parts", param=f"messages.{i}.content.{j}")
            elif i == last_user:
                param = f"messages.{i}.content.{j}.image_url.url"
                images.append((open_image(part.image_url.url, param), param))
    messages = [m.model_dump(exclude_none=True) for m in request.messages]
    return OpenedChat(messages, images, "\n".join(prompt), all_text)


def chat_input(request: ChatRequest) -> ChatInput:
    """Texts and decoded images; images come from the last user message only."""
    return open_chat(request).decode()


def _parts(message: ChatMessage) -> list[ContentPart]:
    if isinstance(message.content, str):
        return [TextPart(type="text", text=message.content)]
    return list(message.content or [])


def _bad_image(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param, code="invalid_image")


def decode_image(url: str, param: str) -> Image.Image:
    """An RGB image from a base64 ``data:`` URL."""
    return decode_opened(open_image(url, param), param)


def open_image(url: str, param: str) -> Image.Image:
    """The image of a base64 ``data:`` URL, opened: its format and size read, not its pixels."""
    if not url.startswith("data:"):
        raise _bad_image(param, "runners only accept images as data: URLs")
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _bad_image(param, "expected a base64 data URL like data:image/png;base64,...")
    try:
        raw = _b64decode(payload)
    except (binascii.Error, ValueError):
        raise _bad_image(param, "the data URL is not valid base64") from None
    try:
        return Image.open(io.BytesIO(raw))
    except Exception as exc:
        raise _undecodable(exc, param) from None


def decode_opened(image: Image.Image, param: str) -> Image.Image:
    """The pixels of an opened image, upright and RGB."""
    try:
        image.load()
        # In place, and no RGB copy of an RGB image: on a page scan (A4 at 300 dpi) the two copies
        # the plain calls make took longer than decoding the pixels did.
        ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb(image)
    except Exception as exc:
        raise _undecodable(exc, param) from None


def _undecodable(exc: Exception, param: str) -> InvalidRequest | PayloadTooLarge:
    if isinstance(exc, Image.DecompressionBombError):
        return PayloadTooLarge(f"{param}: {exc}", param=param)
    # Pillow raises many kinds on corrupt input; all mean "bad image"
    detail = "unknown format" if isinstance(exc, UnidentifiedImageError) else str(exc)
    return _bad_image(param, f"not a decodable image (PNG, JPEG, WebP, TIFF, ...): {detail}")


def _b64decode(payload: str) -> bytes:
    """``payload``'s bytes, whitespace ignored (line-wrapped base64 from clients that talk to the
    runner directly). pybase64 first (SIMD: ~4 ms less per megabyte than the standard library);
    it refuses whitespace, and a little more that the standard library takes (padding after a
    complete quantum), never other bytes, so what it refuses the standard library decides."""
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode("".join(payload.split()), validate=True)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparent areas made white: OCR of dark text on a transparent PNG must still work."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
