"""The FastAPI application: routers over one core, errors in OpenAI's shape.

Middlewares, outermost first: ``ClusterPaths``, which serves the URL each model is registered at
with a cluster's router (``/cluster/NAME/...``) as the root (``ocrd.cluster.urls``), so that all
that follows applies to it alike; CORS (only with ``http.cors_origins``; outermost of the rest so
that refusals carry its headers and a browser can read them), API keys (``http.api_keys``; before
any body is read), paths with control characters refused, the body-size cap, the catch-all that
turns a crash into the 500 envelope, and ``ChatShortcut``, which answers ``POST
/v1/chat/completions`` without FastAPI's router (``ocrd.http.openai.chat``). Each reads its
settings from ``state`` at every request, so a SIGHUP that changes them applies to the next
request.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ocrd.addresses import is_loopback_host
from ocrd.cluster.urls import ClusterPaths
from ocrd.http import admin
from ocrd.http.auth import ApiKeyAuth
from ocrd.http.errors import install_error_handlers
from ocrd.http.limits import BodySizeLimit, PathGuard
from ocrd.http.openai import batches, chat, files, models, ocr
from ocrd.http.openai.chat import ChatShortcut
from ocrd.http.openapi import install_openapi
from ocrd.http.state import AppState

log = logging.getLogger("ocrd.http")


def build_app(state: AppState) -> FastAPI:
    settings = state.settings
    app = FastAPI(
        title="ocrd",
        version=state.version,
        summary="OCR and vision-language models behind an OpenAI-compatible API",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ocrd = state
    # Innermost, inside the catch-all that install_error_handlers adds next.
    app.add_middleware(ChatShortcut)
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(ocr.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(admin.router)
    install_openapi(app)
    # Starlette runs the middleware added last first.
    app.add_middleware(BodySizeLimit, max_bytes=lambda: state.settings.limits.max_body_bytes,
                       limit_for=lambda scope: _upload_limit(scope, state))
    app.add_middleware(PathGuard)
    app.add_middleware(ApiKeyAuth, state=state)
    app.add_middleware(Cors, state=state)
    app.add_middleware(ClusterPaths)
    if not is_loopback_host(settings.http.host) and not settings.http.api_keys:
        log.warning("the HTTP API listens on %s without API keys: anyone who reaches the port may "
                    "use it; add [[http.api_keys]] ('ocrd hash-token --http') or bind 127.0.0.1",
                    settings.http.host)
    return app


def _upload_limit(scope: Scope, state: AppState) -> tuple[int, str] | None:
    """A file upload's body may be as large as the file it carries (``limits.max_file_bytes``)."""
    if scope["path"] == files.FILES_PATH and scope["method"] == "POST":
        return state.settings.limits.max_file_bytes + files.MULTIPART_ALLOWANCE, "limits.max_file_bytes"
    return None


class Cors:
    """Starlette's CORS middleware for the origins ``http.cors_origins`` lists now (none: off),
    built again when a reload changes them."""

    def __init__(self, app: ASGIApp, state: AppState):
        self.app = app
        self.state = state
        self._origins: list[str] = []
        self._cors: ASGIApp = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origins = self.state.settings.http.cors_origins
        if origins != self._origins:
            self._origins = list(origins)
            self._cors = self.app
            if origins:
                self._cors = CORSMiddleware(
                    self.app,
                    allow_origins=self._origins,
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type"],
                    max_age=600,
                )
        await self._cors(scope, receive, send)
