"""Forwarding OpenAI requests to a runner, and translating what can go wrong on the way.

The runner is one of ocrd's (a subprocess, a container) or an upstream server it only routes to
(``[[upstreams]]``); both are reached through ``runner.client()`` (``exchange``: aiohttp directly
for ocrd's own clients, httpx for any other), get the body
``runner.request_body`` makes, and are named in errors by ``runner.describe()`` (the runner's
methods say how each kind differs). Upstream errors in OpenAI's shape pass through with their
status (raised as an error, so metrics count that status); anything unparseable is 502; a refused
connection is 503; a timeout 504 (after KServe's openai_proxy_model).

Streams are relayed event by event, so a runner that dies mid-stream never leaves the client
with half an event: it gets one ``data: {"error": ...}`` event and ``data: [DONE]``. The relay is
a pull: the next line is read from the runner only after the previous event was handed to the
server, which waits for the client's socket to drain, so a slow reader slows the runner down
(TCP flow control all the way) instead of piling the stream up in ocrd's memory. A client that
goes away ends the relay, whose ``finally`` closes the connection to the runner, which is how a
runner (or vLLM) learns to stop generating.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from ocrd.errors import OcrdError, UpstreamError, UpstreamTimeout
from ocrd.openai_types import DONE, sse_event
from ocrd.runners.base import Runner
from ocrd.runners.transport import Reply, as_httpx_response, exchange

log = logging.getLogger("ocrd.proxy")

CHAT_PATH = "/v1/chat/completions"
_DONE_LINE = DONE.decode().strip()  # "data: [DONE]", the event as the relay reads it
# What a server-sent event's lines may start with (the WHATWG grammar); anything else is garbage.
_SSE_FIELDS = ("data:", "event:", "id:", "retry:", ":")


class Completion(dict[str, Any]):
    """A runner's whole completion: the object, for whoever reads it, and the bytes it came as,
    which the route sends on as they are instead of encoding the object again."""

    __slots__ = ("raw",)

    def __init__(self, payload: dict[str, Any], raw: bytes):
        super().__init__(payload)
        self.raw = raw


async def complete(runner: Runner, body: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming request: the runner's completion (a ``Completion`` where its bytes are
    strict JSON); its error raised as an ``OcrdError``."""
    try:
        response = await exchange(runner.client(), CHAT_PATH, encode_body(runner.request_body(body)),
                                  stream=False)
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    content = response.content
    strict = _strict_json_or_none(content)
    payload = strict if strict is not None else _json_or_none(content)
    if response.status_code == 200 and isinstance(payload, dict) and isinstance(payload.get("choices"), list):
        # Bytes that only Python's json takes (NaN, say) are encoded again, as they always were.
        return Completion(payload, content) if strict is not None else payload
    if _is_openai_error(payload) and response.status_code >= 400:
        raise _PassThrough(payload, response.status_code)
    raise UpstreamError(_unexpected(runner, response))


async def open_stream(runner: Runner, body: dict[str, Any]) -> Reply:
    """Starts a streaming request; errors before the first event become ordinary HTTP errors."""
    try:
        response = await exchange(runner.client(), CHAT_PATH, encode_body(runner.request_body(body)),
                                  stream=True)
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    if response.status_code == 200 and _is_event_stream(response):
        return response
    try:
        content = await response.aread()
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    finally:
        await response.aclose()
    payload = _json_or_none(content)
    if _is_openai_error(payload) and response.status_code >= 400:
        raise _PassThrough(payload, response.status_code)
    raise UpstreamError(_unexpected(runner, response))


def encode_body(body: dict[str, Any]) -> bytes:
    """The request body's bytes, as httpx's ``json=`` made them (UTF-8, compact; the same
    values) but by orjson, in a fiftieth of the time: the image's base64 is most of a request and
    ``json`` escapes it character by character. What orjson cannot encode (integers past 64 bits,
    which a request may carry in a field ocrd forwards unread) is encoded by ``json``."""
    try:
        return orjson.dumps(body)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def relay_events(runner: Runner, response: Reply) -> AsyncGenerator[bytes, None]:
    """Relays server-sent events whole; ends with an error event if the runner fails mid-way.

    What one read from the runner brings is handed on as one piece: all the whole events in it
    (a burst of tokens is one write to the client rather than one per token; a token that comes
    alone still goes at once). Lines end as the SSE grammar says (CRLF, LF or CR), bytes are
    read as UTF-8, as httpx would read them; a stream in another charset goes line by line
    through httpx's decoder (``_relay_decoded``)."""
    charset = response.charset_encoding
    if charset is not None and _codec_name(charset) != "utf-8":
        async for piece in _relay_decoded(runner, as_httpx_response(response)):
            yield piece
        return
    event: list[bytes] = []
    done = False
    pending: list[bytes] = []  # the start of a line whose end has not come yet (joined once)
    skip_lf = False  # the last read ended in CR: a LF first in the next one ends no line
    try:
        async for chunk in response.aiter_bytes():
            if skip_lf and chunk.startswith(b"\n"):
                chunk = chunk[1:]
            skip_lf = chunk.endswith(b"\r")
            if b"\n" not in chunk and b"\r" not in chunk:
                pending.append(chunk)
                continue
            data = b"".join((*pending, chunk)) if pending else chunk
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = data.split(b"\n")
            tail = lines.pop()
            pending = [tail] if tail else []
            whole: list[bytes] = []
            for line in lines:
                if line:
                    if not line.startswith(_SSE_FIELD_BYTES):
                        if whole:  # the events before the bad line go first, as they came
                            yield _as_utf8(b"".join(whole))
                        raise _not_events(runner, line)
                    event.append(line)
                    continue
                if not event:
                    continue
                if event == [_DONE_LINE_BYTES]:
                    done = True
                whole.append(b"\n".join(event) + b"\n\n")
                event = []
            if whole:
                yield _as_utf8(b"".join(whole))
        last = b"".join(pending)  # a last line without its end
        if last and not last.startswith(_SSE_FIELD_BYTES):
            raise _not_events(runner, last)
        if not done:
            raise UpstreamError(f"{runner.describe()} ended the stream early ({runner.failure_hint()})")
    except (httpx.HTTPError, OcrdError) as exc:
        error = exc if isinstance(exc, OcrdError) else _transport_error(runner, exc)
        log.warning("stream from %s failed: %s", runner.model_id, error.message)
        yield sse_event(error.to_openai())
        yield DONE
    finally:
        await response.aclose()


_SSE_FIELD_BYTES = tuple(field.encode() for field in _SSE_FIELDS)
_DONE_LINE_BYTES = _DONE_LINE.encode()


def _as_utf8(data: bytes) -> bytes:
    """``data`` as httpx's UTF-8 decoder and ``str.encode`` made it: invalid bytes replaced."""
    return data if data.isascii() else data.decode("utf-8", "replace").encode()


def _not_events(runner: Runner, line: bytes) -> UpstreamError:
    shown = line.decode("utf-8", "replace")[:40]
    return UpstreamError(f"{runner.describe()} sent a stream that is not server-sent events (a "
                         f"line starts {shown!r})")


def _codec_name(charset: str) -> str | None:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return None  # httpx falls back to UTF-8 too


async def _relay_decoded(runner: Runner, response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """``relay_events`` for a stream whose content type names a charset other than UTF-8: its
    lines as httpx decodes them, an event at a time."""
    event: list[str] = []
    done = False
    try:
        async for line in response.aiter_lines():
            if line:
                if not line.startswith(_SSE_FIELDS):
                    raise UpstreamError(f"{runner.describe()} sent a stream that is not server-sent "
                                        f"events (a line starts {line[:40]!r})")
                event.append(line)
                continue
            if not event:
                continue
            if event == [_DONE_LINE]:
                done = True
            yield ("\n".join(event) + "\n\n").encode()
            event = []
        if not done:
            raise UpstreamError(f"{runner.describe()} ended the stream early ({runner.failure_hint()})")
    except (httpx.HTTPError, OcrdError) as exc:
        error = exc if isinstance(exc, OcrdError) else _transport_error(runner, exc)
        log.warning("stream from %s failed: %s", runner.model_id, error.message)
        yield sse_event(error.to_openai())
        yield DONE
    finally:
        await response.aclose()


class _PassThrough(OcrdError):
    """An error answer of the runner, relayed to the client as it is."""

    def __init__(self, payload: dict[str, Any], status: int):
        error = payload["error"]
        # OpenAI's schema has strings (or null) here; vLLM, for one, sends its status as the code.
        super().__init__(str(error.get("message", "")), param=_text_or_none(error.get("param")),
                         code=_text_or_none(error.get("code")))
        self.http_status = status
        self.openai_type = str(error.get("type") or "server_error")


def _transport_error(runner: Runner, exc: httpx.HTTPError) -> OcrdError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{runner.describe()} did not answer in time{runner.timeout_note()}")
    if isinstance(exc, httpx.ConnectError):
        return runner.unreachable(exc)
    return UpstreamError(f"{runner.describe()} closed the connection mid-request "
                         f"({runner.failure_hint()})")


def _unexpected(runner: Runner, response: Reply) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{runner.describe()} answered with an unexpected HTTP {response.status_code} ({kind})"


def _is_event_stream(response: Reply) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _strict_json_or_none(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _is_openai_error(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("error"), dict)
        and "message" in payload["error"]
    )
