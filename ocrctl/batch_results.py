"""What ``ocrctl batch results ID -o DIR`` writes: one file per line that succeeded, named after
its ``custom_id``, with the text the model read (an ``/v1/ocr`` line's pages as markdown, as
``ocrctl ocr`` writes them; a chat line's message as text), and ``errors.jsonl`` with the lines
that failed, as the daemon wrote them.

A ``custom_id`` is the client's text, not a path ocrd checked: it is made into a relative path
inside DIR (no ``..``, no absolute path, no control characters), and two lines that come out
with the same name get the second one's id appended rather than overwrite each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ocrctl.client import CommandError
from ocrctl.ocr_output import as_markdown

ERRORS_FILE = "errors.jsonl"
# A document's own extension is dropped for the text's: "scans/a.pdf" -> "scans/a.md".
_DOCUMENT_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\]')
_PART_LENGTH = 200


@dataclass
class Written:
    files: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (custom_id, why)


def result_line(raw: bytes) -> dict[str, Any]:
    """A line of a batch's output or error file; CommandError when it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CommandError("the daemon sent a result line that is not a JSON object")
    return value


def line_failure(line: dict[str, Any]) -> str | None:
    """Why a line of a batch's output or error file failed; None when it succeeded."""
    error = line.get("error")
    if error:
        return str(error.get("message") or error.get("code") or error)
    response = line.get("response") or {}
    status = response.get("status_code", 0)
    if status >= 400:
        body = response.get("body") or {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return f"HTTP {status}: {message or 'no message'}"
    return None


def text_of(endpoint: str, body: Any) -> tuple[str, str]:
    """(the text, its extension) of a successful line's response body."""
    if endpoint == "/v1/ocr":
        return as_markdown(body), ".md"
    try:
        return str(body["choices"][0]["message"]["content"] or ""), ".txt"
    except (KeyError, IndexError, TypeError):
        return json.dumps(body, ensure_ascii=False, indent=2), ".json"


def safe_name(custom_id: str, extension: str) -> PurePosixPath:
    parts = [_UNSAFE.sub("_", part)[:_PART_LENGTH]
             for part in custom_id.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    path = PurePosixPath(*parts) if parts else PurePosixPath("line")
    if path.suffix.lower() in _DOCUMENT_SUFFIXES:
        path = path.with_suffix("")
    return path.with_name(path.name + extension)


class ResultWriter:
    """Writes the lines of a batch's files into ``folder`` as they are read."""

    def __init__(self, folder: Path, endpoint: str):
        self._folder = folder
        self._endpoint = endpoint
        self._taken: set[PurePosixPath] = set()
        self._errors: Any = None
        self.written = Written()

    def __enter__(self) -> ResultWriter:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create {self._folder}: {error.strerror or error}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._errors is not None:
            self._errors.close()

    def add(self, raw: bytes) -> None:
        line = result_line(raw)
        custom_id = str(line.get("custom_id", ""))
        why = line_failure(line)
        if why is not None:
            self.written.failed.append((custom_id, why))
            self._keep_error(raw)
            return
        text, extension = text_of(self._endpoint, line["response"]["body"])
        name = safe_name(custom_id, extension)
        if name in self._taken:  # two ids that differ only in what a path cannot hold
            name = name.with_name(f"{name.stem}-{len(self._taken)}{name.suffix}")
        self._taken.add(name)
        target = self._folder / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text if text.endswith("\n") or not text else text + "\n", encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot write {target}: {error.strerror or error}") from None
        self.written.files.append(target)

    def _keep_error(self, raw: bytes) -> None:
        if self._errors is None:
            path = self._folder / ERRORS_FILE
            try:
                self._errors = open(path, "wb")
            except OSError as error:
                raise CommandError(f"cannot write {path}: {error.strerror or error}") from None
        self._errors.write(raw if raw.endswith(b"\n") else raw + b"\n")
