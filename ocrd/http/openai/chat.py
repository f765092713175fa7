"""``POST /v1/chat/completions``: validate, lease the model, forward to its runner.

The lease is taken before the response starts, so every error up to the runner's first byte is
an ordinary HTTP status (404, 429, 503, ...); for streams it is held until the last event has
been sent (or the client went away), and released by the response itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ocrd.catalog.catalog import split_model_preset
from ocrd.http import proxy
from ocrd.http.images import forward_payload, prepare_images
from ocrd.http.openai.presets import apply_preset, requested_preset
from ocrd.http.openai.protocol import ChatCompletion, ChatCompletionRequest
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState
from ocrd.model_ids import check_model_name

router = APIRouter()


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": ChatCompletion,
          "content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "the completion; with stream: true, server-sent events ending in [DONE]"},
    **error_responses(400, 401, 404, 413, 429, 502, 503, 504, 507),
}


@router.post("/v1/chat/completions", response_class=Response, responses=_ANSWERS,
             openapi_extra=request_body(ChatCompletionRequest))
async def create_chat_completion(request: Request) -> Response:
    state: AppState = request.app.state.ocrd
    raw, chat = await read_request(request, ChatCompletionRequest)
    # A malformed name: 400 before any lookup; unknown model or preset: 404/400 before image work.
    check_model_name(chat.model, allow_preset=True)
    entry, suffix = split_model_preset(chat.model, state.scheduler.resolve)
    preset = requested_preset(raw, suffix)
    with state.metrics.observe(entry.id):
        images = await prepare_images(
            chat, state.settings.limits, state.settings.http.allow_remote_image_urls
        )
        engine = state.scheduler.info(entry.id).engine
        body = apply_preset(forward_payload(chat, images), entry, preset, engine)
        return await _forward(state, entry.id, body, stream=chat.stream, request=request)


async def _forward(
    state: AppState, model: str, body: dict[str, Any], stream: bool, request: Request
) -> Response:
    stack = contextlib.AsyncExitStack()
    try:
        runner = await stack.enter_async_context(state.scheduler.acquire(model))
        if not stream:
            try:
                return await _complete_unless_disconnected(request, runner, body)
            finally:
                await stack.aclose()
        upstream = await proxy.open_stream(runner, body)
    except BaseException:
        await stack.aclose()
        raise
    return _LeasedStream(proxy.relay_events(runner, upstream), stack)


async def _complete_unless_disconnected(request: Request, runner: Any, body: dict[str, Any]) -> Response:
    """The runner's answer; a client that hangs up first cancels the upstream request, which
    closes the connection to the runner, which stops generating (it watches for that)."""
    task = asyncio.ensure_future(proxy.complete(runner, body))
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    return task.result()


DISCONNECT_POLL_S = 0.25


class _LeasedStream(StreamingResponse):
    """A stream that releases its lease when the response ends, however it ends."""

    def __init__(self, content: Any, stack: contextlib.AsyncExitStack):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # an async generator; Starlette types it as an AsyncIterable
            await self._stack.aclose()
