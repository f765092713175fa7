"""PDFs in chat completions, as OpenAI's API takes them: a ``{"type": "file", "file":
{"file_data": "data:application/pdf;base64,...", "filename": ...}}`` content part becomes one
``image_url`` part per page, rendered at the model's resolution, in its place. The pages then
count as images: ``limits.max_images_per_request`` bounds them, and each is checked like any
image. ``{"file_id": ...}`` names a PDF uploaded through the Files API instead."""

from __future__ import annotations

import base64
import copy
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.config.settings import Settings
from ocrd.documents.pdf import open_pdf, policy_for
from ocrd.documents.protocol import DocumentUrl, FileRef
from ocrd.documents.source import ReadFile, load_document
from ocrd.errors import InvalidRequest, OcrdError, PayloadTooLarge


def has_file_parts(raw: dict[str, Any]) -> bool:
    for message in raw.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "file" for p in content):
            return True
    return False


async def file_parts_as_pages(raw: dict[str, Any], entry: CatalogEntry, settings: Settings,
                              read_file: ReadFile | None = None) -> dict[str, Any]:
    """``raw`` with every file part replaced by the image parts of its pages."""
    body = copy.deepcopy(raw)
    budget = settings.limits.max_images_per_request
    for m, message in enumerate(body["messages"]):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        parts: list[Any] = []
        for p, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "file":
                pages = await _pages(part.get("file") or {}, f"messages.{m}.content.{p}.file", entry, settings,
                                     budget - sum(1 for x in parts if x.get("type") == "image_url"),
                                     read_file)
                parts += pages
            else:
                parts.append(part)
        message["content"] = parts
    return body


async def _pages(file: dict[str, Any], param: str, entry: CatalogEntry, settings: Settings,
                 room: int, read_file: ReadFile | None) -> list[dict[str, Any]]:
    data_url, file_id = file.get("file_data"), file.get("file_id")
    if isinstance(data_url, str):
        document: DocumentUrl | FileRef = DocumentUrl(document_url=data_url)
    elif isinstance(file_id, str) and file_id:
        document = FileRef(file_id=file_id)
    else:
        raise InvalidRequest("a file part needs file_data (data:application/pdf;base64,...) or the "
                             "file_id of a PDF uploaded to /v1/files", param=param)
    try:
        source = await load_document(document, settings.limits, allow_remote=False, read_file=read_file)
    except OcrdError as exc:
        if exc.param == "document.file_id":
            exc.param = f"{param}.file_id"
        raise
    if not source.is_pdf:
        raise InvalidRequest("a file part must hold a PDF; send images as image_url parts", param=param)
    pdf = await open_pdf(source.data)
    try:
        if pdf.page_count > room:
            raise PayloadTooLarge(
                f"the PDF has {pdf.page_count} pages, and each page is an image: at most "
                f"{settings.limits.max_images_per_request} are allowed per request "
                "(limits.max_images_per_request); send fewer pages or use /v1/ocr", param=param)
        policy = policy_for(entry.document, settings.documents.default_dpi)
        indexes = list(range(pdf.page_count))
        await pdf.check_sizes(indexes, policy, settings.limits.max_page_pixels)
        pages = []
        for index in indexes:
            page = await pdf.render(index, policy)
            url = "data:image/png;base64," + base64.b64encode(page.png).decode()
            pages.append({"type": "image_url", "image_url": {"url": url}})
        return pages
    finally:
        await pdf.close()
