"""The FastAPI application: routers over one core, errors in OpenAI's shape."""

from __future__ import annotations

from fastapi import FastAPI

from ocrd.http import admin
from ocrd.http.errors import install_error_handlers
from ocrd.http.limits import BodySizeLimit
from ocrd.http.openai import chat, models
from ocrd.http.state import AppState


def build_app(state: AppState) -> FastAPI:
    app = FastAPI(
        title="ocrd",
        version=state.version,
        summary="OCR and vision-language models behind an OpenAI-compatible API",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ocrd = state
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(admin.router)
    app.add_middleware(BodySizeLimit, max_bytes=state.settings.limits.max_body_bytes)
    return app
