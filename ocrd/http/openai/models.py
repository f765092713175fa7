"""``GET /v1/models`` and ``GET /v1/models/{id}``: what ocrd can serve, with its state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ocrd.core.scheduler import SlotInfo
from ocrd.http.openai.protocol import ModelCard, ModelList
from ocrd.http.openapi import error_responses
from ocrd.http.state import AppState
from ocrd.model_ids import MODEL_NAME_PATTERN, check_model_name

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401))
async def list_models(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return {"object": "list", "data": [model_card(info, state) for info in state.scheduler.models()]}


_MODEL_ID = {"name": "model_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
             "description": "a model id or alias (ORG/NAME may be sent as is or as ORG%2FNAME)"}


@router.get("/v1/models/{model_id:path}", response_model=ModelCard,
            responses=error_responses(400, 401, 404, 503),
            openapi_extra={"parameters": [_MODEL_ID]})
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return model_card(state.scheduler.info(check_model_name(model_id)), state)


def model_card(info: SlotInfo, state: AppState) -> dict[str, Any]:
    """OpenAI's Model object, plus ocrd's own facts under ``ocrd`` (clients ignore it)."""
    return {
        "id": info.id,
        "object": "model",
        "created": int(state.started_at),
        "owned_by": "ocrd",
        "ocrd": {
            "aliases": list(info.aliases),
            "engine": info.engine,
            "state": info.state.value,
            "description": info.description,
            "pinned": info.pinned,
            # The weights' licence (and what it restricts) as the catalog records it; null unknown.
            "license": info.license,
            "license_note": info.license_note,
        },
    }
