"""The document a ``/v1/ocr`` request names, as bytes: a ``data:`` URL (PDF or image), a file
uploaded through the Files API (``{"type": "file", "file_id": ...}``), or an ``http(s)`` URL
fetched under the same rules as chat images (only with ``http.allow_remote_image_urls``; never to
private or loopback addresses)."""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ocrd.config.settings import LimitsSettings
from ocrd.documents.pdf import is_pdf
from ocrd.documents.protocol import DocumentUrl, FileRef, ImageUrl
from ocrd.errors import InvalidRequest, ObjectNotFound, PayloadTooLarge
from ocrd.http.images import RemoteFetcher, strict_b64decode


@dataclass(frozen=True)
class SourceDocument:
    data: bytes
    is_pdf: bool
    url: str  # a data: URL as sent, for an image sent as one (forwarded unchanged); else ""


ReadFile = Callable[[str], Awaitable[bytes]]


async def load_document(document: DocumentUrl | ImageUrl | FileRef, limits: LimitsSettings,
                        allow_remote: bool, fetcher: RemoteFetcher | None = None,
                        read_file: ReadFile | None = None) -> SourceDocument:
    if isinstance(document, FileRef):
        data = await _uploaded(document.file_id, limits, read_file)
        return SourceDocument(data, is_pdf(data), "")  # an image upload is sent as a new data: URL
    url = document.document_url if isinstance(document, DocumentUrl) else document.url
    param = "document.document_url" if isinstance(document, DocumentUrl) else "document.image_url"
    scheme = url[:16].partition(":")[0].strip().lower()
    if scheme == "data":
        data = _data_url_bytes(url, limits.max_document_bytes, param)
    elif scheme in ("http", "https"):
        if not allow_remote:
            raise InvalidRequest(
                f"the document is an {scheme}:// URL, but fetching remote documents is off "
                "(http.allow_remote_image_urls = false); send it as a data: URL", param=param)
        data = await (fetcher or RemoteFetcher()).fetch(url, max_bytes=limits.max_document_bytes,
                                                        what="the document", param=param)
    else:
        raise InvalidRequest("the document must be a data: URL (data:application/pdf;base64,...)"
                             + (" or an http(s) URL" if allow_remote else ""), param=param)
    pdf = is_pdf(data)
    if isinstance(document, ImageUrl) and pdf:
        raise InvalidRequest("image_url holds a PDF; send PDFs as {\"type\": \"document_url\"}", param=param)
    # An image sent as an image data: URL goes on as it came; any other is sent as a new one.
    as_sent = scheme == "data" and not pdf and url[5:11].lower() == "image/"
    return SourceDocument(data, pdf, url if as_sent else "")


async def _uploaded(file_id: str, limits: LimitsSettings, read_file: ReadFile | None) -> bytes:
    param = "document.file_id"
    if read_file is None:
        raise InvalidRequest("documents by file_id need the Files API (/v1/files); send the "
                             "document as a data: URL (document_url)", param=param)
    try:
        data = await read_file(file_id)
    except ObjectNotFound as exc:
        raise ObjectNotFound(exc.message, param=param) from None
    if len(data) > limits.max_document_bytes:
        raise PayloadTooLarge(f"file {file_id} is over {limits.max_document_bytes} bytes "
                              "(limits.max_document_bytes)", param=param)
    return data


def _data_url_bytes(url: str, max_bytes: int, param: str) -> bytes:
    header, comma, payload = url.partition(",")
    fields = [f.strip().lower() for f in header[len("data:"):].split(";")]
    if not comma or len(fields) < 2 or fields[-1] != "base64":
        raise InvalidRequest("the document is not a base64 data URL; use data:application/pdf;base64,...",
                             param=param)
    if len(payload) // 4 * 3 - 2 > max_bytes:
        raise PayloadTooLarge(f"the document is over {max_bytes} bytes (limits.max_document_bytes)",
                              param=param)
    try:
        return strict_b64decode(payload)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the document is not valid base64 (standard alphabet, '=' padding, no "
                             "line breaks)", param=param) from None
