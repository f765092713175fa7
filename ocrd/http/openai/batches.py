"""OpenAI's Batch API: ``/v1/batches`` over ``AppState.batches`` (``ocrd.jobs.batches``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from ocrd.http.openai.lists import openai_list
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState
from ocrd.jobs.batches import LIST_LIMIT

router = APIRouter()
BATCHES_PATH = "/v1/batches"

_BATCH: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}},
          "description": "OpenAI's Batch object"}}


class BatchCreateRequest(BaseModel):
    """``POST /v1/batches``: what OpenAI's takes (its values checked by the batch service)."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


@router.post(BATCHES_PATH, responses={**_BATCH, **error_responses(400, 401, 404, 413, 507)},
             openapi_extra=request_body(BatchCreateRequest))
async def create_batch(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    _raw, body = await read_request(request, BatchCreateRequest)
    batch = await state.batches.create(input_file_id=body.input_file_id, endpoint=body.endpoint,
                                       completion_window=body.completion_window, metadata=body.metadata)
    return batch.to_openai()


@router.get(BATCHES_PATH, responses=error_responses(400, 401, 404))
async def list_batches(request: Request, after: str | None = None,
                       limit: int = Query(20, ge=1, le=LIST_LIMIT)) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    batches, has_more = await state.batches.list_batches(after=after, limit=limit)
    return openai_list([batch.to_openai() for batch in batches], has_more)


@router.get(BATCHES_PATH + "/{batch_id}", responses={**_BATCH, **error_responses(400, 401, 404)})
async def retrieve_batch(batch_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return (await state.batches.get(batch_id)).to_openai()


@router.post(BATCHES_PATH + "/{batch_id}/cancel", responses={**_BATCH, **error_responses(400, 401, 404, 409)})
async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return (await state.batches.cancel(batch_id)).to_openai()
