"""The FastAPI side of ocrd's error hierarchy: every HTTP error is OpenAI's envelope.

``{"error": {"message", "type", "param", "code"}}`` for every failure: ``OcrdError`` with its own
status and headers, FastAPI's 422 validation errors as 400, Starlette's 404/405 with their status,
anything else 500 with a generic message and the traceback in the log (logger ``ocrd.http``).
"""

from __future__ import annotations

import http
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocrd.errors import GENERIC_INTERNAL_MESSAGE, InvalidRequest, OcrdError
from ocrd.http.openai.protocol import invalid_request_from_errors

logger = logging.getLogger("ocrd.http")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers and the catch-all; call before the app serves its first request."""
    app.add_exception_handler(OcrdError, ocrd_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_middleware(CatchAllErrors)


def error_response(error: OcrdError) -> JSONResponse:
    """The HTTP response for ``error``: its status, its envelope, its headers (Retry-After)."""
    return JSONResponse(
        error.to_openai(), status_code=error.http_status, headers=error.http_headers()
    )


async def ocrd_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to an ``OcrdError``: its response, and a warning in the log for a 5xx."""
    assert isinstance(exc, OcrdError)
    if exc.http_status >= 500:
        logger.warning(
            "%s %s -> %d: %s", request.method, request.url.path, exc.http_status, exc.message
        )
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "")
        suffix = f" ({reason} at position {bad_json['loc'][-1]})" if reason else ""
        return error_response(InvalidRequest(f"request body is not valid JSON{suffix}"))
    if errors and errors[0].get("type") == "missing" and tuple(errors[0]["loc"]) == ("body",):
        return error_response(InvalidRequest("request body is missing; send a JSON object"))
    where = ("body", "query", "path", "header", "cookie")
    return error_response(invalid_request_from_errors(errors, drop=where))


_OPENAI_TYPE = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = str(exc.detail)
    # Only Starlette's bare defaults are rewritten; a route's own detail is kept as it is.
    if status in (404, 405) and message == http.HTTPStatus(status).phrase:
        if status == 404:
            message = f"unknown URL: {request.method} {request.url.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
    body = {
        "error": {
            "message": message,
            "type": _OPENAI_TYPE.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, status_code=status, headers=exc.headers)


class CatchAllErrors:
    """Turns an unhandled exception into the generic 500 envelope and logs its traceback.

    Starlette's own ``Exception`` handler re-raises after answering (so the server logs it a
    second time, and test clients raise); this answers once and logs once. If the response has
    already started (a stream), nothing can be sent: the exception goes on to the server, which
    aborts the connection, so the client cannot mistake a cut-off stream for a complete one.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = _unhandled(scope, exc)
            await response(scope, receive, send)


def _unhandled(scope: Scope, exc: Exception) -> JSONResponse:
    # An OcrdError raised inside a task group arrives wrapped; it still deserves its own status.
    inner: Any = exc
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    if isinstance(inner, OcrdError):
        return error_response(inner)
    logger.error("unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
    return error_response(OcrdError(GENERIC_INTERNAL_MESSAGE))
