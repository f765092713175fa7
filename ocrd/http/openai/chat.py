"""``POST /v1/chat/completions``: parse, call the ``ChatService`` (``AppState.chat``), answer.

The service does the work (model, preset, images, lease, forwarding); this route only turns its
answer into a response: a whole completion into JSON, a stream into server-sent events whose
response returns the stream's lease when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ocrd.http.errors import ocrd_error
from ocrd.http.openai.chat_service import ChatStream
from ocrd.http.openai.protocol import ChatCompletion, ChatCompletionRequest
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.proxy import CHAT_PATH, Completion
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState
from ocrd.shortcut import PostShortcut

router = APIRouter()


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletion,
          "content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "the completion; with stream: true, server-sent events ending in [DONE]"},
    **error_responses(400, 401, 404, 413, 429, 502, 503, 504, 507),
}


@router.post(CHAT_PATH, response_class=Response, responses=_ANSWERS,
             openapi_extra=request_body(ChatCompletionRequest))
async def create_chat_completion(request: Request) -> Response:
    # Documents the route (OpenAPI) and answers where ChatShortcut is not in front of the router.
    return await _answer(request)


async def _answer(request: Request) -> Response:
    state: AppState = request.app.state.ocrd
    raw, chat = await read_request(request, ChatCompletionRequest)
    answer = await state.chat.create(raw, chat, request.is_disconnected)
    if answer is None:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    if isinstance(answer, ChatStream):
        return _LeasedStream(answer)
    if isinstance(answer, Completion):  # the runner's bytes, not encoded again
        return Response(answer.raw, media_type="application/json")
    return JSONResponse(answer)


class ChatShortcut(PostShortcut):
    """``POST /v1/chat/completions`` answered here, before FastAPI's router (``ocrd.shortcut``):
    the same route function and the same error handler for ``OcrdError`` (``ocrd_error``).
    Installed as the innermost middleware (``ocrd.http.app``), so everything outside it (CORS,
    keys, path guard, body cap, the catch-all for crashes) applies as to every other route; any
    other method or path goes on to the router."""

    def __init__(self, app: ASGIApp):
        super().__init__(app, CHAT_PATH, _answer, ocrd_error)


class _LeasedStream(StreamingResponse):
    """A stream that returns its lease when the response ends, however it ends."""

    def __init__(self, stream: ChatStream):
        super().__init__(stream.events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await _until_disconnected(self.stream_response(send), self.listen_for_disconnect(receive))
        finally:
            await self._stream.aclose()


async def _until_disconnected(streaming: Coroutine[Any, Any, None],
                              listening: Coroutine[Any, Any, None]) -> None:
    """Runs ``streaming`` until it ends, or until ``listening`` sees the client go (then the
    stream is cancelled, which closes the runner's connection). What StreamingResponse does with
    an anyio task group, in two asyncio tasks: anyio's cancel scopes cost a stream more than
    the tasks themselves. ``streaming``'s exception, if it raised one, is raised here."""
    stream = asyncio.ensure_future(streaming)
    listen = asyncio.ensure_future(listening)
    try:
        await asyncio.wait((stream, listen), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stream.cancel()  # no-ops on what has ended
        listen.cancel()
        await asyncio.wait((stream, listen))
    if not stream.cancelled():
        stream.result()
