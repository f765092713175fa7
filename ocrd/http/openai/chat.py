"""``POST /v1/chat/completions``: parse, call the ``ChatService`` (``AppState.chat``), answer.

The service does the work (model, preset, images, lease, forwarding); this route only turns its
answer into a response: a whole completion into JSON, a stream into server-sent events whose
response returns the stream's lease when it ends, however it ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ocrd.http.openai.chat_service import ChatStream
from ocrd.http.openai.protocol import ChatCompletion, ChatCompletionRequest
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState

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
    answer = await state.chat.create(raw, chat, request.is_disconnected)
    if answer is None:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    if isinstance(answer, ChatStream):
        return _LeasedStream(answer)
    return JSONResponse(answer)


class _LeasedStream(StreamingResponse):
    """A stream that returns its lease when the response ends, however it ends."""

    def __init__(self, stream: ChatStream):
        super().__init__(stream.events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()
