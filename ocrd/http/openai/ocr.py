"""``POST /v1/ocr``: Mistral's OCR API (``ocrd.documents.service`` does the work).

Each page is read as a chat request through ``AppState.chat`` (lease, preset, images checked,
the runner's answer), so documents and chat share one path to the models.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ocrd.documents.protocol import OcrRequest
from ocrd.documents.service import ClientGone
from ocrd.http.openai.protocol import ChatCompletionRequest
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState

router = APIRouter()

_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}},
          "description": "Mistral's OCRResponse: pages of markdown, blocks, figures, dimensions"},
    **error_responses(400, 401, 404, 413, 429, 501, 502, 503, 504, 507),
}


@router.post("/v1/ocr", response_class=Response, responses=_ANSWERS, openapi_extra=request_body(OcrRequest))
async def create_ocr(request: Request) -> Response:
    state: AppState = request.app.state.ocrd
    _raw, ocr = await read_request(request, OcrRequest)

    async def ask(body: dict[str, Any]) -> str | None:
        answer = await state.chat.create(body, ChatCompletionRequest.model_validate(body), request.is_disconnected)
        if answer is None:
            return None
        content = answer["choices"][0]["message"].get("content")  # type: ignore[index]
        return content if isinstance(content, str) else ""

    try:
        result = await state.documents.process(ocr, ask)
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    return Response(orjson.dumps(result), media_type="application/json")
