"""One batch line, run as the same request would be over HTTP, below live traffic.

A ``/v1/chat/completions`` line goes through the chat service and a ``/v1/ocr`` line through the
document service (whose pages go through the chat service), both with ``batch=True``: their
leases come after live requests' (``Scheduler.acquire``). The answer is (HTTP status, body) as a
client would have had it: the completion or OCR response, or OpenAI's error object.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ocrd.documents.protocol import OcrRequest
from ocrd.documents.service import DocumentService
from ocrd.errors import OcrdError
from ocrd.http.openai.chat_service import ChatService
from ocrd.http.openai.protocol import ChatCompletionRequest
from ocrd.openai_types import parse_body_as

log = logging.getLogger("ocrd.batches")

RunLine = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]


def line_runner(chat: ChatService, documents: DocumentService) -> RunLine:
    async def never_gone() -> bool:
        return False  # nobody holds a connection open for a batch line

    async def ask(body: dict[str, Any]) -> str | None:
        answer = await chat.create(body, ChatCompletionRequest.model_validate(body), never_gone,
                                   batch=True)
        content = answer["choices"][0]["message"].get("content") if isinstance(answer, dict) else None
        return content if isinstance(content, str) else ""

    async def run(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            if endpoint == "/v1/ocr":
                return 200, await documents.process(parse_body_as(OcrRequest, body), ask)
            answer = await chat.create(body, parse_body_as(ChatCompletionRequest, body), never_gone,
                                       batch=True)
            return 200, dict(answer) if isinstance(answer, dict) else {}
        except OcrdError as exc:
            return exc.http_status, exc.to_openai()
        except Exception:  # a bug: the line fails as a request would (500), the batch goes on
            log.exception("a batch line to %s failed", endpoint)
            return 500, {"error": {"message": "internal error while running this line; see ocrd's log",
                                   "type": "server_error", "param": None, "code": None}}

    return run
