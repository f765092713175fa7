"""``ocrctl ocr FILE...``: recognises images and PDFs through ocrd's HTTP API.

The control plane tells us where the HTTP API is and which model is the default. An image goes
as a ``data:`` URL in a chat completion, exactly as any OpenAI client would send it (with
``--format json``: to ``/v1/ocr`` instead, for Mistral's page object). A PDF is cut here into
one-page PDFs (``ocrctl.pdf``), which go to ``POST /v1/ocr`` (Mistral's OCR API) a few at a
time, so that a bar counts the pages as they come back and no page re-sends the whole file;
``ocrctl.ocr_output`` joins the answers into one document. ``--jobs`` files are read at once;
results come out in the order the files were named. When builtin/ppocr's text shows words it could
not read (a script its model does not have), a line on stderr names tesseract (``ocrctl.script_hint``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command
from ocrctl.commands.document_bars import DocumentBars
from ocrctl.ocr_output import as_markdown, as_text, merge_pages, page_of, plain_text
from ocrctl.pages import Ranges, parse_pages, select_pages
from ocrctl.script_hint import script_hint
from ocrd.control.v1 import control_pb2 as pb

T = TypeVar("T")

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
SUPPORTED = "PDF, PNG, JPEG, WebP, GIF, BMP, TIFF"
DEFAULT_HTTP_TIMEOUT = 600.0  # a first request may load the model
DEFAULT_JOBS = 2
# Pages of one document in flight: one read by the model while the next waits in ocrd's queue.
PAGES_IN_FLIGHT = 2
BUSY_RETRIES = 5  # 429s (ocrd's queue for the model is full) waited out, as Retry-After says
LONGEST_RETRY_WAIT = 30.0
_EXTENSIONS = {"markdown": ".md", "text": ".txt", "json": ".json"}
# Answers that concern one page of a document (too large, the model failed on it, ran out of time);
# the others (unknown model, API key, a preset that cannot read pages...) concern every page.
_PAGE_STATUSES = {200, 413, 500, 502, 504}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(commands, common, "ocr", "recognise the text in PDFs and image files", run_ocr)
    parser.add_argument("files", nargs="+", metavar="FILE", help=f"PDFs and images ({SUPPORTED})")
    parser.add_argument(
        "--model", default="", metavar="MODEL",
        help="model id or alias (default: the daemon's default model)",
    )
    parser.add_argument(
        "--prompt", default="", metavar="TEXT",
        help="instruction sent with an image (VLMs); PDFs are read with the model's document preset",
    )
    parser.add_argument(
        "--pages", type=_pages_argument, metavar="PAGES",
        help="pages of each PDF to read, numbered from 0 as in Mistral's API: '0,2-4' (default: all)",
    )
    parser.add_argument(
        "--format", choices=sorted(_EXTENSIONS), default=None,
        help="markdown (default): a PDF's pages each after a '<!-- page N -->' line, N from 0; "
        "text: the markdown as plain lines (no markup), a PDF's pages separated by form feeds; "
        "json: Mistral's OCR response (pages, blocks, dimensions), one line per file. "
        "--json without --format: one line per file, the API's answer as it came",
    )
    parser.add_argument(
        "-o", "--output", metavar="PATH",
        help="write to PATH instead of stdout: a file for one input, else a directory (created if "
        "missing) with one NAME.md, .txt or .json per input",
    )
    parser.add_argument(
        "-j", "--jobs", type=_jobs_argument, default=DEFAULT_JOBS, metavar="N",
        help=f"files read at once (default: {DEFAULT_JOBS}); a progress bar each on a terminal",
    )


def _pages_argument(text: str) -> Ranges:
    try:
        return parse_pages(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _jobs_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of files from 1 up")
    return int(text)


def run_ocr(client: Client, args: argparse.Namespace) -> int:
    status = client.call("GetStatus", pb.GetStatusRequest(), pb.GetStatusResponse)
    if not status.http_url:
        raise CommandError("ocrd reports no HTTP API address")
    if args.prompt and args.format == "json":
        raise CommandError("--prompt does not go with --format json: /v1/ocr reads with the model's "
                           "document preset; leave one of them out")
    format = args.format or ("json" if args.json else "markdown")
    targets = _targets(args.files, args.output, format)
    bars = DocumentBars(sys.stderr, sys.stdout, tty=sys.stderr.isatty())
    try:
        failed = asyncio.run(_read_all(status.http_url, status.default_model, args, targets, bars))
    except _Unreachable as error:
        raise CommandError(f"cannot reach ocrd's HTTP API at {status.http_url}: {error}") from None
    return 1 if failed else 0


class _Unreachable(Exception):
    """ocrd's HTTP API cannot be reached: every file would fail the same way, so ocrctl stops."""


async def _read_all(http_url: str, default_model: str, args: argparse.Namespace,
                    targets: list[Path | None], bars: DocumentBars) -> bool:
    """Reads every file, ``args.jobs`` at once; True when any failed (one line each on stderr)."""
    import httpx  # here, not at the top: the other commands start faster without it

    timeout = args.timeout if args.timeout is not None else DEFAULT_HTTP_TIMEOUT
    slots = asyncio.Semaphore(args.jobs)
    async with httpx.AsyncClient(timeout=timeout, headers=api_key_headers()) as http:
        reader = _Reader(_Api(http, http_url, timeout), args, args.model or default_model, bars)

        async def one(key: int, file: str, target: Path | None) -> str | None:
            async with slots:
                try:
                    text = await reader.read(key, Path(file))
                    if target is not None:
                        _write(target, text)
                except CommandError as error:
                    bars.drop(key)
                    bars.message(f"ocrctl: {file}: {error}")
                    return None
                bars.end(key)
                return text

        tasks = [asyncio.create_task(one(key, file, target))
                 for key, (file, target) in enumerate(zip(args.files, targets, strict=True))]
        failed, printed = False, False
        headers = len(args.files) > 1 and not reader.json_lines
        try:
            for file, target, task in zip(args.files, targets, tasks, strict=True):
                text = await task
                if text is None:
                    failed = True
                elif target is None:  # on stdout, in the order the files were named
                    bars.output((("\n" if printed else "") + f"==> {file} <==\n" if headers else "") + text)
                    printed = True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return failed


class _Api:
    """POSTs to ocrd's HTTP API: the answer's JSON, or CommandError with the API's own message."""

    def __init__(self, http: Any, base_url: str, timeout: float):
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        for attempt in range(BUSY_RETRIES + 1):
            try:
                response = await self._http.post(self._base + path, json=body)
            except httpx.ConnectTimeout as error:
                raise _Unreachable(str(error) or "connection timed out") from None
            except httpx.TimeoutException:
                raise CommandError(f"ocrd's HTTP API gave no answer within {self._timeout:g} s: "
                                   "allow more with --timeout SECONDS") from None
            except httpx.TransportError as error:
                raise _Unreachable(str(error) or type(error).__name__) from None
            wait = _retry_after(response) if response.status_code == 429 and attempt < BUSY_RETRIES else None
            if wait is None:
                break
            await asyncio.sleep(wait)
        if response.status_code >= 400:
            raise _ApiError(_error_message(response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise _ApiError(f"ocrd answered HTTP {response.status_code} with something that is not JSON",
                            response.status_code) from None


class _ApiError(CommandError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Reader:
    """Reads one file into the text ``ocrctl ocr`` writes for it, moving its bar as pages come."""

    def __init__(self, api: _Api, args: argparse.Namespace, model: str, bars: DocumentBars):
        self._api = api
        self._model = model
        self._prompt: str = args.prompt
        self._ranges: Ranges | None = args.pages
        self._format: str = args.format or ("json" if args.json else "markdown")
        self._raw_chat = args.json and args.format is None  # today's --json: the chat answer as is
        self._bars = bars

    @property
    def json_lines(self) -> bool:
        return self._format == "json"

    async def read(self, key: int, path: Path) -> str:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CommandError(error.strerror or str(error)) from None
        from ocrctl.pdf import is_pdf

        if is_pdf(data):
            response = await self._pdf(key, path, data)
            self._hint(path, response["model"], _page_texts(response), document=True)
            return self._render(response)
        mime = image_type(data)
        if mime is None:
            raise CommandError(f"unsupported file type (supported: {SUPPORTED})")
        self._select(1)
        self._bars.start(key, str(path), 1)
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        if self._format == "json" and not self._raw_chat:
            answer = await self._api.post("/v1/ocr", {"model": self._model,
                                                      "document": {"type": "image_url", "image_url": url}})
            self._bars.advance(key)
            response = merge_pages([(0, page_of(answer))], _model_of(answer, self._model), len(data))
            self._hint(path, response["model"], _page_texts(response))
            return self._render(response)
        answer = await self._api.post("/v1/chat/completions", self._chat_body(url))
        self._bars.advance(key)
        content = _content_of(answer)
        if content is not None:
            self._hint(path, _model_of(answer, self._model), [(0, content)])
        if self._raw_chat:
            return json.dumps(answer) + "\n"
        if content is None:
            raise CommandError("ocrd's answer has no choices[0].message.content")
        return plain_text(content) if self._format == "text" else content + "\n"

    def _hint(self, path: Path, model: str, pages: list[tuple[int, str]], document: bool = False) -> None:
        """A line on stderr when the text read looks like a script the model does not read;
        the output and the exit status stay as they are (the model did read the file)."""
        hint = script_hint(model, pages, document=document)
        if hint:
            self._bars.message(f"ocrctl: {path}: {hint}")

    def _chat_body(self, url: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}}]
        if self._prompt:
            content.insert(0, {"type": "text", "text": self._prompt})
        return {"model": self._model, "messages": [{"role": "user", "content": content}]}

    async def _pdf(self, key: int, path: Path, data: bytes) -> dict[str, Any]:
        from ocrctl.pdf import PdfPages

        if self._prompt:
            raise CommandError("--prompt is for images: a PDF is read through /v1/ocr with the model's "
                               "document preset; leave --prompt out for PDFs")
        pdf = await PdfPages.open(data)
        try:
            wanted = self._select(pdf.page_count)
            self._bars.start(key, str(path), len(wanted))
            in_flight = asyncio.Semaphore(PAGES_IN_FLIGHT)

            async def read_page(index: int) -> tuple[str, dict[str, Any]]:
                async with in_flight:
                    document = "data:application/pdf;base64," + base64.b64encode(await pdf.page_pdf(index)).decode()
                    try:
                        answer = await self._api.post("/v1/ocr", {
                            "model": self._model, "document": {"type": "document_url", "document_url": document}})
                        page = page_of(answer)
                    except CommandError as error:
                        if getattr(error, "status", 200) in _PAGE_STATUSES:
                            raise CommandError(f"page {index}: {error}") from None
                        raise
                    self._bars.advance(key)
                    return _model_of(answer, self._model), page

            pages = await _all_or_none([read_page(index) for index in wanted])
        finally:
            await pdf.close()
        model = pages[0][0] if pages else self._model
        return merge_pages([(index, page) for index, (_, page) in zip(wanted, pages, strict=True)], model, len(data))

    def _select(self, count: int) -> list[int]:
        try:
            return select_pages(self._ranges, count)
        except ValueError as error:
            raise CommandError(str(error)) from None

    def _render(self, response: dict[str, Any]) -> str:
        if self._format == "json":
            return json.dumps(response) + "\n"
        return as_text(response) if self._format == "text" else as_markdown(response)


async def _all_or_none(calls: list[Awaitable[T]]) -> list[T]:
    """Every call's result in order; at the first failure the others are cancelled, it is raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _targets(files: list[str], output: str | None, format: str) -> list[Path | None]:
    """Where each file's result goes: stdout (None), ``-o FILE`` for one input, else a file each
    in the directory ``-o`` names."""
    if output is None:
        return [None] * len(files)
    path = Path(output)
    if len(files) == 1 and not path.is_dir() and not output.endswith(os.sep):
        return [path]
    if path.exists() and not path.is_dir():
        raise CommandError(f"-o {output} is a file, but {len(files)} inputs need a directory (one output "
                           "file each): name a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the directory {output}: {error.strerror or error}") from None
    targets: dict[Path, str] = {}
    for file in files:
        target = path / (Path(file).stem + _EXTENSIONS[format])
        if target in targets:
            raise CommandError(f"{targets[target]} and {file} would both be written to {target}: rename one, "
                               "or OCR them in separate runs")
        targets[target] = file
    return list(targets)


def _write(target: Path, text: str) -> None:
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot write {target}: {error.strerror or error}") from None


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


def _retry_after(response: Any) -> float | None:
    """Seconds a 429 asks to wait (``Retry-After``, capped); None when it does not say."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), LONGEST_RETRY_WAIT)


def _model_of(answer: Any, default: str) -> str:
    model = answer.get("model") if isinstance(answer, dict) else None
    return model if isinstance(model, str) and model else default


def _page_texts(response: dict[str, Any]) -> list[tuple[int, str]]:
    return [(page["index"], plain_text(page["markdown"])) for page in response["pages"]]


def _content_of(answer: Any) -> str | None:
    try:
        return str(answer["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return None
