"""What ``ocrctl batch submit`` sends: a JSONL file as it is, or a folder of documents as an
``/v1/ocr`` batch (each document uploaded, then one line per document naming it by file id).

Documents are recognised by their first bytes, as ``ocrctl ocr`` does, not by their names; a
folder's other files are skipped and counted. Lines are in the order of the documents' paths,
and each line's ``custom_id`` is the document's path inside the folder (``ocrctl batch results
-o`` names its output after it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ocrctl.client import CommandError
from ocrctl.pdf import is_pdf
from ocrd.control.v1 import control_pb2 as pb

ENDPOINTS = ("/v1/chat/completions", "/v1/ocr")
MAX_LINES = 50_000  # the daemon's (and OpenAI's) most lines per batch
UPLOAD_CHUNK = 1024 * 1024
# A batch has 24 hours to run its lines; a document uploaded for it is needed no longer, and
# goes a day after that (the daemon may have been down meanwhile).
DOCUMENT_SECONDS = 48 * 3600
_HEAD = 1024  # bytes read to recognise a document


@dataclass(frozen=True)
class Folder:
    documents: list[Path]  # in the order of their paths
    skipped: list[Path]  # files that are neither PDFs nor images


def read_folder(folder: Path, image_type: Callable[[bytes], str | None]) -> Folder:
    documents: list[Path] = []
    skipped: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                with open(path, "rb") as handle:
                    head = handle.read(_HEAD)
            except OSError as error:
                raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
            (documents if is_pdf(head) or image_type(head) else skipped).append(path)
    documents.sort(key=lambda p: p.relative_to(folder).as_posix())
    if not documents:
        raise CommandError(f"{folder} has no PDFs or images (of {len(skipped)} files); "
                           "ocrctl batch submit takes a folder of documents or a JSONL file")
    if len(documents) > MAX_LINES:
        raise CommandError(f"{folder} has {len(documents)} documents; a batch takes at most "
                           f"{MAX_LINES}: submit its subfolders one by one")
    return Folder(documents, skipped)


def ocr_line(custom_id: str, model: str, file_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/ocr",
                       "body": {"model": model, "document": {"type": "file", "file_id": file_id}}},
                      ensure_ascii=False).encode() + b"\n"


def endpoint_of(path: Path, wish: str) -> str:
    """``--endpoint``, else the first line's ``url`` (all lines share it); a file whose first
    line says nothing usable goes as chat completions, and the daemon's validation says what
    is wrong with it, line by line."""
    if wish:
        return wish
    try:
        with open(path, "rb") as handle:
            first = handle.readline(1024 * 1024)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        url = json.loads(first).get("url")
    except (ValueError, AttributeError):
        url = None
    return url if url in ENDPOINTS else ENDPOINTS[0]


def upload_parts(header: pb.UploadFileHeader, path: Path,
                 sent: Callable[[int], None] = lambda n: None) -> Iterator[pb.UploadFileRequest]:
    """The UploadFile stream for a file: its header, then its bytes a chunk at a time
    (``sent(n)`` after each)."""
    yield pb.UploadFileRequest(header=header)
    with open(path, "rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            yield pb.UploadFileRequest(data=chunk)
            sent(len(chunk))


def bytes_parts(header: pb.UploadFileHeader, data: bytes) -> Iterator[pb.UploadFileRequest]:
    yield pb.UploadFileRequest(header=header)
    for start in range(0, len(data), UPLOAD_CHUNK):
        yield pb.UploadFileRequest(data=data[start:start + UPLOAD_CHUNK])
