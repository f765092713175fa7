"""``ocrctl selftest [MODEL]``: the seed's ``test_memory_optimized_ocr.py``, against ocrd.

Renders a test image with a known line of text, sends it through the OpenAI-compatible HTTP API
(exactly as an application would) to every loaded model, or to MODEL (loaded first), and reports
per model the latency, the completion tokens per second, the memory the model holds and whether
the expected text came back: exactly (ignoring case and spacing) from the builtin OCR engines,
any text at all from a VLM (whose wording varies).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ocrctl import render
from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command
from ocrctl.commands.ocr import DEFAULT_HTTP_TIMEOUT, _error_message, api_key_headers
from ocrd.control.v1 import control_pb2 as pb

# Read exactly by PP-OCR and Tesseract in DejaVu Sans and in Pillow's own font (tried both).
EXPECTED_TEXT = "Hello from ocrd 42"
FONT_SIZE = 28
FONT_FILE = "DejaVuSans.ttf"
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF",
             "/usr/local/share/fonts", "/Library/Fonts")
OCR_ENGINES = ("builtin",)  # engines whose answer must be the text itself
VLM_MAX_TOKENS = 256  # enough for the line (and a VLM's chatter), bounded for slow CPUs


@dataclass
class Outcome:
    model: str
    engine: str
    passed: bool
    latency_seconds: float = 0.0
    completion_tokens: int = 0
    tokens_per_second: float = 0.0
    memory_bytes: int = 0
    output: str = ""
    error: str = ""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    selftest = add_command(
        commands, common, "selftest",
        "send a rendered test image to the loaded models and check what comes back", run_selftest,
    )
    selftest.add_argument(
        "model", nargs="?", default="", metavar="MODEL",
        help="load and test this model (default: every loaded model)",
    )


def run_selftest(client: Client, args: argparse.Namespace) -> int:
    import httpx  # here, not at the top: the other commands start faster without it

    status = client.call("GetStatus", pb.GetStatusRequest(), pb.GetStatusResponse)
    if not status.http_url:
        raise CommandError("ocrd reports no HTTP API address")
    if args.model:
        _load(client, args.model)
    models = _loaded(client)
    if args.model:
        models = [info for info in models if args.model in (info.id, *info.aliases)]
    if not models:
        raise CommandError("no model is loaded: load one (ocrctl load MODEL) or name one "
                           "(ocrctl selftest MODEL)")
    image = render_test_image()
    url = status.http_url.rstrip("/") + "/v1/chat/completions"
    timeout = args.timeout if args.timeout is not None else DEFAULT_HTTP_TIMEOUT
    with httpx.Client(timeout=timeout, headers=api_key_headers()) as http:
        outcomes = [_probe(http, url, info, image) for info in models]
    memory = {info.id: info.memory_bytes for info in _loaded(client)}  # measured after the work
    for outcome in outcomes:
        outcome.memory_bytes = memory.get(outcome.model, 0)
    print(json.dumps({"expected_text": EXPECTED_TEXT, "results": [asdict(o) for o in outcomes]},
                     indent=2) if args.json else format_outcomes(outcomes))
    return 0 if all(outcome.passed for outcome in outcomes) else 1


def _load(client: Client, model: str) -> None:
    for step in client.stream("LoadModel", pb.LoadModelRequest(model=model), pb.LoadModelProgress):
        if step.state == pb.MODEL_STATE_FAILED:
            raise CommandError(step.message or f"{model} failed to load")


def _loaded(client: Client) -> list[pb.ModelInfo]:
    listing = client.call("ListModels", pb.ListModelsRequest(loaded_only=True), pb.ListModelsResponse)
    return [info for info in listing.models if info.state == pb.MODEL_STATE_READY]


def _probe(http: Any, url: str, info: pb.ModelInfo, image: bytes) -> Outcome:
    import httpx

    data_url = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    body: dict[str, Any] = {"model": info.id, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url}}]}]}
    if info.engine not in OCR_ENGINES:
        body["max_tokens"] = VLM_MAX_TOKENS  # OCR engines count words: never cut their answer
    outcome = Outcome(model=info.id, engine=info.engine, passed=False)
    started = time.perf_counter()
    try:
        response = http.post(url, json=body)
    except httpx.HTTPError as error:
        outcome.error = f"cannot reach ocrd's HTTP API: {error}"
        return outcome
    outcome.latency_seconds = time.perf_counter() - started
    if response.status_code >= 400:
        outcome.error = _error_message(response)
        return outcome
    answer = response.json()
    outcome.output = (answer.get("choices") or [{}])[0].get("message", {}).get("content") or ""
    outcome.completion_tokens = int((answer.get("usage") or {}).get("completion_tokens") or 0)
    if outcome.latency_seconds > 0:
        outcome.tokens_per_second = outcome.completion_tokens / outcome.latency_seconds
    outcome.passed = judge(info.engine, outcome.output)
    return outcome


def judge(engine: str, output: str) -> bool:
    """OCR engines must return the text exactly (case and spacing aside); VLMs anything."""
    if engine in OCR_ENGINES:
        return normalise(output) == normalise(EXPECTED_TEXT)
    return bool(output.strip())


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def format_outcomes(outcomes: list[Outcome]) -> str:
    rows = [
        [o.model, o.engine, "pass" if o.passed else "FAIL",
         f"{o.latency_seconds:.2f}s" if o.latency_seconds else "-",
         f"{o.tokens_per_second:.1f}" if o.completion_tokens else "-", render.size(o.memory_bytes)]
        for o in outcomes
    ]
    lines = [f"test image: {EXPECTED_TEXT!r}",
             render.table(["MODEL", "ENGINE", "RESULT", "LATENCY", "TOKENS/S", "MEMORY"], rows)]
    for o in outcomes:
        if not o.passed:
            got = o.error or (f"got {o.output.strip()!r}" if o.output.strip() else "got no text")
            lines.append(f"{o.model}: expected {EXPECTED_TEXT!r}, {got}")
    return "\n".join(lines)


def render_test_image() -> bytes:
    """A PNG of EXPECTED_TEXT, black on white, in DejaVu Sans (else Pillow's own font)."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = _find_font()
    face = (ImageFont.truetype(str(font_path), FONT_SIZE) if font_path
            else ImageFont.load_default(size=FONT_SIZE))
    margin = FONT_SIZE * 2
    size = (int(face.getlength(EXPECTED_TEXT)) + 2 * margin, int(FONT_SIZE * 1.8) + 2 * margin)
    image = Image.new("L", size, color=255)
    ImageDraw.Draw(image).text((margin, margin), EXPECTED_TEXT, fill=0, font=face)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _find_font() -> Path | None:
    for directory in map(Path, FONT_DIRS):
        if directory.is_dir():
            for candidate in directory.rglob(FONT_FILE):
                return candidate
    return None
