"""``GET /v1/models`` and ``GET /v1/models/{id}``: what ocrd can serve, with its state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ocrd.http.state import AppState
from ocrd.scheduler import SlotInfo

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return {"object": "list", "data": [model_card(info, state) for info in state.scheduler.models()]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return model_card(state.scheduler.info(model_id), state)


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
        },
    }
