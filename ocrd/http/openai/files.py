"""OpenAI's Files API: ``/v1/files`` over ``AppState.files`` (``ocrd.jobs.files``).

Uploads are ``multipart/form-data`` (``file``, ``purpose``, ``expires_after[anchor]`` and
``expires_after[seconds]``, as the official client sends them), parsed by Starlette (which spools a
large part to a temporary file, never into memory) and copied into the state directory. Their
body may be ``limits.max_file_bytes`` large (``ocrd.http.app`` gives this route its own limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from ocrd.errors import InvalidRequest
from ocrd.http.openai.lists import openai_list
from ocrd.http.openapi import error_responses
from ocrd.http.state import AppState
from ocrd.jobs.files import EXPIRES_MAX, EXPIRES_MIN, LIST_LIMIT, PURPOSES

router = APIRouter()
FILES_PATH = "/v1/files"
# Room for the multipart framing and the small fields around the file itself.
MULTIPART_ALLOWANCE = 64 * 1024
_CHUNK = 256 * 1024

_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}},
          "description": "OpenAI's File object"}}
_UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": EXPIRES_MIN, "maximum": EXPIRES_MAX},
    }}}}}}
_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "the file's bytes, as uploaded"}}


@router.post(FILES_PATH, responses={**_FILE, **error_responses(400, 401, 413, 507)},
             openapi_extra=_UPLOAD)
async def create_file(request: Request) -> JSONResponse:
    state: AppState = request.app.state.ocrd
    try:
        form = await request.form(max_files=1, max_fields=16)
    except MultiPartException as exc:
        raise InvalidRequest(f"the upload is not valid multipart/form-data: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file is required: send the file as the multipart/form-data "
                                 "field 'file', with 'purpose' beside it", param="file")
        stored = await state.files.create(
            upload.file, filename=upload.filename or "", purpose=_text(form.get("purpose")),
            max_bytes=state.settings.limits.max_file_bytes,
            expires_anchor=_field(form.get("expires_after[anchor]")),
            expires_seconds=_field(form.get("expires_after[seconds]")))
    finally:
        await form.close()
    return JSONResponse(stored.to_openai())


@router.get(FILES_PATH, responses=error_responses(400, 401, 404))
async def list_files(request: Request, purpose: str | None = None,
                     limit: int = Query(LIST_LIMIT, ge=1, le=LIST_LIMIT), after: str | None = None,
                     order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    files, has_more = await state.files.list(purpose=purpose, limit=limit, after=after, order=order)
    return openai_list([stored.to_openai() for stored in files], has_more)


@router.get(FILES_PATH + "/{file_id}", responses={**_FILE, **error_responses(400, 401, 404)})
async def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    return (await state.files.get(file_id)).to_openai()


@router.get(FILES_PATH + "/{file_id}/content", response_class=StreamingResponse,
            responses={**_CONTENT, **error_responses(400, 401, 404)})
async def file_content(file_id: str, request: Request) -> StreamingResponse:
    state: AppState = request.app.state.ocrd
    stored = await state.files.get(file_id)
    # Opened before the answer starts: a delete meanwhile cannot cut the download short.
    handle = await asyncio.to_thread(open, state.files.content_path(stored), "rb")
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream",
                             headers={"content-length": str(stored.bytes)})


@router.delete(FILES_PATH + "/{file_id}", responses=error_responses(400, 401, 404, 409))
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    state: AppState = request.app.state.ocrd
    await state.files.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


async def _chunks(handle: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        handle.close()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _field(value: Any) -> str | None:
    """A form field as sent (an empty one too); None only when it is absent."""
    if value is None:
        return None
    return value if isinstance(value, str) else ""
