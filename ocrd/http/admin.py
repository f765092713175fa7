"""Plain endpoints: ``/health``, ``/health/ready``, ``/metrics``, and the seed's ``POST /models/load``/``unload``.

Same core as ``ocrctl load``/``unload`` (the scheduler); kept for scripts written against the
original servers, which POST ``{"model": "..."}``. Their bodies are pydantic models, so that the
checks and ocrd's OpenAPI document (``ocrd.http.openapi``) are one thing; fields they do not know
are ignored, as the original servers did.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ocrd.config.units import parse_duration
from ocrd.core.scheduler import SlotInfo
from ocrd.http.openapi import error_responses, request_body
from ocrd.http.request_work import read_request
from ocrd.http.state import AppState
from ocrd.model_ids import MODEL_NAME_PATTERN, check_model_name

router = APIRouter()

KeepAlive = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
                    "description": "seconds, or a duration such as '30s', '10m', '1h'"}),
]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    model: str = Field(min_length=1, description="The id or alias of a model.",
                       json_schema_extra={"pattern": MODEL_NAME_PATTERN})


class LoadModelRequest(_Body):
    keep_alive: KeepAlive | None = None
    pin: bool = False
    # The engine table's names (ocrd.core.engines; tests/unit/test_engine_table.py keeps them equal).
    engine: Literal["builtin", "transformers", "vllm"] | None = None
    quantization: Literal["auto", "none", "8bit", "4bit"] | None = None


class UnloadModelRequest(_Body):
    pass


class HealthModel(BaseModel):
    id: str
    state: str


class HealthResponse(BaseModel):
    status: Literal["ok", "stopping"]
    version: str
    models: list[HealthModel]


class ReadyModel(BaseModel):
    id: str
    state: str
    error: str


class ReadyResponse(BaseModel):
    # ready: serving, and every preloaded or pinned model is loaded; starting: those are being
    # loaded after a start; loading: one of them is not loaded now (loading, failed, unloaded).
    status: Literal["ready", "starting", "loading", "stopping"]
    version: str
    waiting_for: list[ReadyModel]


class LoadModelResponse(BaseModel):
    status: Literal["loaded"]
    model: str
    state: str
    engine: str | None
    pid: int | None
    memory_bytes: int | None
    pinned: bool
    keep_alive_seconds: float | None


class UnloadModelResponse(BaseModel):
    status: Literal["unloaded", "not_loaded"]
    model: str
    freed_bytes: int


@router.get("/health", responses={200: {"model": HealthResponse},
                                  503: {"model": HealthResponse, "description": "stopping"}})
async def health(request: Request) -> JSONResponse:
    state: AppState = request.app.state.ocrd
    models = [
        {"id": info.id, "state": info.state.value}
        for info in state.scheduler.models()
        if info.state.value != "not_loaded"
    ]
    status = "stopping" if state.stopping else "ok"
    body = {"status": status, "version": state.version, "models": models}
    return JSONResponse(body, status_code=503 if state.stopping else 200)


@router.get("/health/ready", responses={200: {"model": ReadyResponse},
                                        503: {"model": ReadyResponse, "description": "not ready"}})
async def ready(request: Request) -> JSONResponse:
    """A readiness probe: 200 once the models this node has undertaken to serve (``[models.X]
    preload``, and those pinned by a load) are loaded; ``/health`` says only that ocrd runs."""
    state: AppState = request.app.state.ocrd
    waiting = [{"id": model.id, "state": model.state, "error": model.error}
               for model in state.scheduler.committed_models() if model.state != "ready"]
    if state.stopping:
        status = "stopping"
    elif not state.loaded_at_start:
        status = "starting"
    else:
        status = "loading" if waiting else "ready"
    body = {"status": status, "version": state.version, "waiting_for": waiting}
    return JSONResponse(body, status_code=200 if status == "ready" else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus metrics"}, **error_responses(401)})
async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.ocrd
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


_LOAD_ERRORS = error_responses(400, 401, 404, 409, 413, 429, 503, 504, 507)


@router.post("/models/load", response_model=LoadModelResponse, responses=_LOAD_ERRORS,
             openapi_extra=request_body(LoadModelRequest))
async def load_model(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    _, body = await read_request(request, LoadModelRequest)
    info = await state.scheduler.load(check_model_name(body.model), keep_alive=body.keep_alive,
                                      pin=body.pin, engine=body.engine,
                                      quantization=body.quantization)
    return {"status": "loaded", **_summary(info)}


@router.post("/models/unload", response_model=UnloadModelResponse, responses=_LOAD_ERRORS,
             openapi_extra=request_body(UnloadModelRequest))
async def unload_model(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    _, unload = await read_request(request, UnloadModelRequest)
    result = await state.scheduler.unload(check_model_name(unload.model))
    return {
        "status": "unloaded" if result.was_loaded else "not_loaded",
        "model": result.model,
        "freed_bytes": result.freed_bytes,
    }


def _summary(info: SlotInfo) -> dict[str, Any]:
    return {
        "model": info.id,
        "state": info.state.value,
        "engine": info.engine,
        "pid": info.pid,
        "memory_bytes": info.memory_bytes,
        "pinned": info.pinned,
        "keep_alive_seconds": info.keep_alive,
    }
