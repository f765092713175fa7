"""Pure ASGI middlewares that refuse a request before it is routed.

``PathGuard``: a path with a control character (``%0A``, ``%00``, ...) is refused with 400. No route
takes one, and Starlette matches routes with ``re.match`` and ``$``, which also matches before a
final newline: ``/v1/models/ppocr%0A`` would be routed, and answered, as ``/v1/models/ppocr``.

``BodySizeLimit`` caps request bodies (``limits.max_body_bytes``). The limit is read at each
request, so a SIGHUP that changes it applies to the next request.

A declared ``Content-Length`` over the limit is answered 413 at once, before a byte of the body is
read; one within it needs nothing more (the HTTP parser delivers exactly that many bytes, and
refuses a malformed or conflicting length before the app sees the request), so the request goes
on unwrapped. A body without one (chunked) is counted as the app reads it; once over, the app's
next read raises and whatever the app then answers is replaced by the 413. Responses pass
through message by message, so streaming responses stay streaming.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocrd.errors import InvalidRequest, OcrdError, PayloadTooLarge

_CONTROL = re.compile("[\x00-\x1f\x7f]")


class PathGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _CONTROL.search(scope["path"]):
            error = InvalidRequest("the request path has a control character (such as %0A or "
                                   "%00); no ocrd route takes one")
            await _answer(error, scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _answer(error: OcrdError, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(error.to_openai(), status_code=error.http_status,
                            headers=error.http_headers())
    await response(scope, receive, send)


class BodySizeLimit:
    """``max_bytes``: the request body's limit (read at each request: SIGHUP replaces the
    settings); ``limit_for``, where a route takes more (an upload), its limit and setting name."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int],
                 limit_for: Callable[[Scope], tuple[int, str] | None] = lambda scope: None):
        self.app = app
        self.max_bytes = max_bytes
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One limit for the whole request, even across a reload.
        limit, setting = self.limit_for(scope) or (self.max_bytes(), "limits.max_body_bytes")
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await _reject(limit, setting, scope, receive, send)
            else:  # the server hands on no more body than declared: nothing to count
                await self.app(scope, receive, send)
            return
        await self._counted(limit, setting, scope, receive, send)

    async def _counted(self, limit: int, setting: str, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            if tripped:
                raise _too_large(limit, setting)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    tripped = True
                    raise _too_large(limit, setting)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Once tripped, the app's own answer (FastAPI turns a failed body read into its 400)
            # is dropped and ours is sent instead.
            if tripped and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped or started:
                raise
        if tripped and not started:
            await _reject(limit, setting, scope, receive, send)


def _too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes ({setting})")


async def _reject(limit: int, setting: str, scope: Scope, receive: Receive, send: Send) -> None:
    # No "Connection: close": closing while the client still uploads makes its next bytes meet a
    # TCP reset (RFC 9112 section 9.6) and clients then report a reset instead of the 413.
    # uvicorn discards the rest of the body and keeps the connection usable.
    await _answer(_too_large(limit, setting), scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length; count instead
    return None
