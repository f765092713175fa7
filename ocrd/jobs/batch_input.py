"""A batch's input file, read line by line as OpenAI's Batch API reads it.

Each line is ``{"custom_id": ..., "method": "POST", "url": <the batch's endpoint>, "body": {...}}``
with a ``model`` in the body. A file with any bad line fails the batch's validation as a whole
(OpenAI's ``errors`` list, one entry per bad line with its 1-based number), before any line runs;
what a body asks is checked when its line runs, and a bad one goes to the error file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/ocr")
MAX_LINES = 50_000  # OpenAI's limit per batch
MAX_ERRORS = 100  # reported per file: enough to fix it, not a copy of it
CUSTOM_ID_LENGTH = 512


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based, as editors count
    custom_id: str
    model: str
    body: bytes  # the body's JSON, as stored and later sent


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def read_input(data: bytes, endpoint: str) -> tuple[list[InputLine], list[LineError]]:
    """The lines of a batch input file, or what is wrong with it (then no lines)."""
    lines: list[InputLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1].strip() == b"":
        raw_lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(raw_lines, start=1):
        if len(errors) >= MAX_ERRORS:
            break
        line, error = _read_line(raw, number, endpoint, seen)
        if error is not None:
            errors.append(error)
        elif line is not None:
            lines.append(line)
    if not raw_lines:
        errors.append(LineError("empty_file", "the input file has no lines"))
    elif len(raw_lines) > MAX_LINES:
        errors.append(LineError("too_many_tasks", f"the input file has {len(raw_lines)} lines; a "
                                f"batch takes at most {MAX_LINES}: split it"))
    return ([] if errors else lines), errors


def _read_line(raw: bytes, number: int, endpoint: str, seen: set[str]
               ) -> tuple[InputLine | None, LineError | None]:
    def bad(code: str, message: str, param: str | None = None) -> tuple[None, LineError]:
        return None, LineError(code, f"line {number}: {message}", number, param)

    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return bad("invalid_json_line", "not a JSON object on one line")
    if not isinstance(request, dict):
        return bad("invalid_json_line", "not a JSON object on one line")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return bad("missing_required_parameter", "custom_id (a non-empty string) is required", "custom_id")
    if len(custom_id) > CUSTOM_ID_LENGTH:
        return bad("invalid_request", f"custom_id is longer than {CUSTOM_ID_LENGTH} characters", "custom_id")
    if custom_id in seen:
        return bad("duplicate_custom_id", f"custom_id {custom_id[:80]!r} is used twice; each line "
                   "needs its own", "custom_id")
    if request.get("method") != "POST":
        return bad("invalid_request", 'method must be "POST"', "method")
    if request.get("url") != endpoint:
        return bad("invalid_url", f"url must be the batch's endpoint, {endpoint}", "url")
    body = request.get("body")
    if not isinstance(body, dict):
        return bad("missing_required_parameter", "body (a JSON object) is required", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return bad("missing_required_parameter", "body.model is required", "body.model")
    if body.get("stream"):
        return bad("invalid_request", "body.stream must be false in a batch", "body.stream")
    seen.add(custom_id)
    return InputLine(number, custom_id, model, orjson.dumps(body)), None
