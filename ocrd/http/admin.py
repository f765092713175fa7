"""Plain endpoints: ``/health``, ``/metrics``, and the seed's ``POST /models/load``/``unload``.

Same core as ``ocrctl load``/``unload`` (the scheduler); kept for scripts written against the
original servers, which POST ``{"model": "..."}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ocrd.config import parse_duration
from ocrd.errors import InvalidRequest
from ocrd.http.openai.protocol import parse_json_body
from ocrd.http.state import AppState
from ocrd.scheduler import SlotInfo

router = APIRouter()


@router.get("/health")
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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.ocrd
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/models/load")
async def load_model(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    raw = parse_json_body(await request.body())
    model = _model_field(raw)
    keep_alive = raw.get("keep_alive")
    try:
        seconds = None if keep_alive is None else parse_duration(keep_alive)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="keep_alive") from None
    pin = raw.get("pin", False)
    if not isinstance(pin, bool):
        raise InvalidRequest("'pin' must be true or false", param="pin")
    engine, quantization = _choice(raw, "engine"), _choice(raw, "quantization")
    info = await state.scheduler.load(model, keep_alive=seconds, pin=pin, engine=engine,
                                      quantization=quantization)
    return {"status": "loaded", **_summary(info)}


@router.post("/models/unload")
async def unload_model(request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    result = await state.scheduler.unload(_model_field(parse_json_body(await request.body())))
    return {
        "status": "unloaded" if result.was_loaded else "not_loaded",
        "model": result.model,
        "freed_bytes": result.freed_bytes,
    }


def _choice(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or value not in _CHOICES[key]):
        raise InvalidRequest(f"'{key}' must be one of: {', '.join(_CHOICES[key])}", param=key)
    return value


_CHOICES = {
    "engine": ("builtin", "transformers", "vllm"),
    "quantization": ("auto", "none", "8bit", "4bit"),
}


def _model_field(raw: dict[str, Any]) -> str:
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: the id or alias of a model", param="model")
    return model


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
