"""``ocrctl ocr FILE...``: recognises images through ocrd's OpenAI-compatible HTTP API.

The control plane tells us where the HTTP API is and which model is the default; the image goes
as a ``data:`` URL in a chat completion, exactly as any OpenAI client would send it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command
from ocrd.control.v1 import control_pb2 as pb

# Recognised by their first bytes, not their names: a mislabelled file still goes out right.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
SUPPORTED = "PNG, JPEG, WebP, GIF, BMP, TIFF"
DEFAULT_HTTP_TIMEOUT = 600.0  # a first request may load the model


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(commands, common, "ocr", "recognise the text in image files", run_ocr)
    parser.add_argument("files", nargs="+", metavar="FILE", help=f"images ({SUPPORTED})")
    parser.add_argument(
        "--model", default="", metavar="MODEL",
        help="model id or alias (default: the daemon's default model)",
    )
    parser.add_argument(
        "--prompt", default="", metavar="TEXT", help="instruction sent with the image (VLMs)"
    )


def run_ocr(client: Client, args: argparse.Namespace) -> int:
    import httpx  # here, not at the top: the other commands start faster without it

    status = client.call("GetStatus", pb.GetStatusRequest(), pb.GetStatusResponse)
    if not status.http_url:
        raise CommandError("ocrd reports no HTTP API address")
    url = status.http_url.rstrip("/") + "/v1/chat/completions"
    model = args.model or status.default_model
    timeout = args.timeout if args.timeout is not None else DEFAULT_HTTP_TIMEOUT
    failed = False
    with httpx.Client(timeout=timeout, headers=api_key_headers()) as http:
        for index, file in enumerate(args.files):
            if len(args.files) > 1 and not args.json:
                print(("\n" if index else "") + f"==> {file} <==", flush=True)
            try:
                answer = _recognise(http, url, model, Path(file), args.prompt)
            except CommandError as error:
                print(f"ocrctl: {file}: {error}", file=sys.stderr, flush=True)
                failed = True
                continue
            except httpx.HTTPError as error:
                raise CommandError(f"cannot reach ocrd's HTTP API at {status.http_url}: {error}") from None
            print(json.dumps(answer) if args.json else _text_of(answer), flush=True)
    return 1 if failed else 0


def _recognise(http: Any, url: str, model: str, path: Path, prompt: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(path)}}]
    if prompt:
        content.insert(0, {"type": "text", "text": prompt})
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    response = http.post(url, json=body)
    if response.status_code >= 400:
        raise CommandError(_error_message(response))
    try:
        return response.json()
    except ValueError:
        raise CommandError(
            f"ocrd answered HTTP {response.status_code} with something that is not JSON"
        ) from None


def data_url(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CommandError(error.strerror or str(error)) from None
    mime = image_type(data)
    if mime is None and data.startswith(b"%PDF"):
        quoted = shlex.quote(str(path))
        raise CommandError(f"a PDF, which ocrctl ocr cannot send yet: convert its pages to images first "
                           f"(`pdftoppm -png -r 150 {quoted} page`, then `ocrctl ocr page-*.png`)")
    if mime is None:
        raise CommandError(f"unsupported file type (supported: {SUPPORTED})")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_type(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    return None


def api_key_headers() -> dict[str, str]:
    """``Authorization: Bearer $OCRD_API_KEY`` for a daemon with ``http.api_keys``; else none."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


API_KEY_ENV = "OCRD_API_KEY"


def _error_message(response: Any) -> str:
    """OpenAI's ``{"error": {"message": ...}}`` when the body has it, else the HTTP status."""
    if response.status_code == 401:
        if os.environ.get(API_KEY_ENV, "").strip():
            return (f"ocrd's HTTP API refused the key in ${API_KEY_ENV} (HTTP 401): it is not "
                    "one of its http.api_keys")
        return f"ocrd's HTTP API needs an API key (HTTP 401): set ${API_KEY_ENV} to one of its keys"
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    return str(message) if message else f"HTTP {response.status_code} {response.reason_phrase}"


def _text_of(answer: dict[str, Any]) -> str:
    try:
        return answer["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise CommandError("ocrd's answer has no choices[0].message.content") from None
