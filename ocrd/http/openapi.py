"""ocrd's own OpenAPI document (``GET /openapi.json``): what each route takes and what it answers.

The routes read their bodies themselves (``read_request`` bounds the work, refuses NaN and deep
nesting before pydantic sees anything, and errors name the field the OpenAI way), so FastAPI cannot derive the
request bodies from their signatures. ``request_body(Model)`` documents one instead, from the very
pydantic model the route validates with, and ``install_openapi`` puts those models' schemas into
``components``. Every error status a route can give is documented with OpenAI's error envelope
(``error_responses``); FastAPI's own 422 is dropped, since ocrd answers validation errors with 400.

The document is what the schemathesis test fuzzes ocrd against: a status or a body that does not
match it is a failure there.
"""

from __future__ import annotations

import http
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ocrd.http.openai.protocol import ErrorResponse

_REF = "#/components/schemas/{model}"
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body ``model`` validates."""
    _BODY_MODELS[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for these error statuses, each with OpenAI's error envelope."""
    return {
        status: {"model": ErrorResponse, "description": http.HTTPStatus(status).phrase}
        for status in statuses
    }


def install_openapi(app: FastAPI) -> None:
    """Makes ``app.openapi()`` (and so ``/openapi.json``) return ocrd's document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                   routes=app.routes)
            _add_body_models(document)
            _drop_validation_errors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document


def _add_body_models(document: dict[str, Any]) -> None:
    if not _BODY_MODELS:
        return
    _, schemas = models_json_schema(
        [(model, "validation") for model in _BODY_MODELS.values()], ref_template=_REF
    )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in schemas.get("$defs", {}).items():
        components.setdefault(name, schema)


def _drop_validation_errors(document: dict[str, Any]) -> None:
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
