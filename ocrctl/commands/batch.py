"""``ocrctl batch``: bulk work through ocrd's Batch API (the one OpenAI's clients speak), over
the control plane.

- ``submit FILE.jsonl``: an OpenAI batch input file, as it is; ``submit DIR``: every PDF and
  image in the folder, read by ``/v1/ocr`` (``--model``, default the daemon's). Then follows
  the batch until it ends (``--detach``: returns at once), and with ``-o DIR`` writes the results.
- ``ls``, ``show ID [--watch]``, ``cancel ID``, ``results ID [-o DIR]``.

The batch runs in ocrd, not here: Ctrl-C stops watching, never the batch. A batch with a line
that failed, or that did not complete, exits 1.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ocrctl import render
from ocrctl.batch_input import (
    DOCUMENT_SECONDS,
    ENDPOINTS,
    bytes_parts,
    endpoint_of,
    ocr_line,
    read_folder,
    upload_parts,
)
from ocrctl.batch_progress import Rate, average_rate, fraction, summary
from ocrctl.batch_results import ERRORS_FILE, ResultWriter, line_failure, result_line
from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command, print_json
from ocrctl.commands.ocr import image_type
from ocrctl.commands.progress import Bar
from ocrd.control.v1 import control_pb2 as pb

_LOG_EVERY = 10.0  # seconds between progress lines when stdout is not a terminal
_FAILURES_SHOWN = 10


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    summary_text = "bulk work through ocrd's Batch API: submit, follow, fetch results"
    group = commands.add_parser("batch", help=summary_text, description=summary_text)
    batch_commands = group.add_subparsers(dest="batch_command", metavar="COMMAND", required=True)
    submit = add_command(batch_commands, common, "submit",
                         "submit a JSONL batch file, or a folder of PDFs and images to OCR", run_submit)
    submit.add_argument("source", metavar="FILE.jsonl|DIR",
                        help="an OpenAI batch input file, or a folder whose PDFs and images are "
                        "each read by /v1/ocr (subfolders too; other files are skipped)")
    submit.add_argument("--model", default="", metavar="MODEL",
                        help="with a folder: the model that reads it (default: the daemon's)")
    submit.add_argument("--endpoint", default="", choices=ENDPOINTS,
                        help="with a JSONL file: its lines' url (default: the first line's)")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="a label kept with the batch (up to 16)")
    submit.add_argument("--detach", action="store_true",
                        help="return once the batch is created (follow it with 'batch show ID --watch')")
    submit.add_argument("-o", "--output", metavar="DIR",
                        help="when the batch ends, write its results there (as 'batch results -o')")
    add_command(batch_commands, common, "ls", "batches, newest first", run_ls).add_argument(
        "--limit", type=int, default=20, metavar="N", help="how many (1 to 100, default 20)")
    show = add_command(batch_commands, common, "show", "a batch's status and progress", run_show)
    show.add_argument("id", metavar="ID")
    show.add_argument("--watch", "-w", action="store_true", help="follow it until it ends")
    cancel = add_command(batch_commands, common, "cancel",
                         "cancel a batch (lines running finish; what was done is kept)", run_cancel)
    cancel.add_argument("id", metavar="ID")
    results = add_command(batch_commands, common, "results",
                          "a batch's results: JSONL on stdout, or a file per line in a folder",
                          run_results)
    results.add_argument("id", metavar="ID")
    results.add_argument("-o", "--output", metavar="DIR",
                         help="write each line's text to DIR/<custom_id>.md (OCR) or .txt (chat), "
                         f"and the failed lines to DIR/{ERRORS_FILE}")


# --- submit ------------------------------------------------------------------------------------


def run_submit(client: Client, args: argparse.Namespace) -> int:
    source = Path(args.source)
    metadata = _metadata(args.metadata)
    if source.is_dir():
        input_file, endpoint = _submit_folder(client, source, args)
    elif source.is_file():
        if args.model:
            raise CommandError("--model is for a folder of documents; a JSONL file's lines name "
                               "their models")
        endpoint = endpoint_of(source, args.endpoint)
        input_file = client.upload("UploadFile", upload_parts(
            pb.UploadFileHeader(filename=source.name, purpose="batch"), source), pb.StoredFile)
    else:
        raise CommandError(f"{source}: no such file or folder")
    batch = client.call("CreateBatch", pb.CreateBatchRequest(
        input_file_id=input_file.id, endpoint=endpoint, metadata=metadata), pb.Batch)
    if args.json:
        print_json(batch, compact=True)
    else:
        print(f"batch {batch.id}: {endpoint}, input {input_file.id} ({render.size(input_file.bytes)})",
              flush=True)
    if args.detach:
        if not args.json:
            print(f"follow it with 'ocrctl batch show {batch.id} --watch'")
        return 0
    last = _follow(client, batch.id, args.json)
    if last is None:
        return 130
    written = bool(args.output and last.output_file_id + last.error_file_id)
    if written:
        _write_results(client, last, Path(args.output), quiet=args.json)
    return _outcome(last, quiet=args.json, written=written)


def _submit_folder(client: Client, folder: Path, args: argparse.Namespace) -> tuple[pb.StoredFile, str]:
    if args.endpoint and args.endpoint != "/v1/ocr":
        raise CommandError("a folder of documents is read by /v1/ocr; --endpoint is for a JSONL file")
    model = args.model or client.call("GetStatus", pb.GetStatusRequest(), pb.GetStatusResponse).default_model
    found = read_folder(folder, image_type)
    if found.skipped and not args.json:
        print(f"skipping {len(found.skipped)} files that are not PDFs or images "
              f"(first: {found.skipped[0]})", file=sys.stderr)
    total = sum(path.stat().st_size for path in found.documents)
    display = _UploadDisplay(sys.stdout, len(found.documents), total,
                             tty=sys.stdout.isatty() and not args.json)
    lines = io.BytesIO()
    try:
        for path in found.documents:
            name = path.relative_to(folder).as_posix()
            header = pb.UploadFileHeader(filename=path.name, purpose="ocr",
                                         expires_after_seconds=DOCUMENT_SECONDS)
            stored = client.upload("UploadFile", upload_parts(header, path, display.sent), pb.StoredFile)
            lines.write(ocr_line(name, model, stored.id))
            display.file_done()
    finally:
        display.end()
    header = pb.UploadFileHeader(filename=f"{folder.resolve().name or 'documents'}.jsonl", purpose="batch")
    return client.upload("UploadFile", bytes_parts(header, lines.getvalue()), pb.StoredFile), "/v1/ocr"


class _UploadDisplay:
    def __init__(self, out: TextIO, files: int, total: int, *, tty: bool):
        self._bar = Bar(out) if tty else None
        self._files, self._total = files, total
        self._done_files = self._sent = 0

    def sent(self, count: int) -> None:
        self._sent += count
        self._draw()

    def file_done(self) -> None:
        self._done_files += 1
        self._draw()

    def _draw(self) -> None:
        if self._bar is not None:
            share = self._sent / self._total if self._total else 1.0
            self._bar.draw(f"uploading {render.progress_bar(share)} {self._done_files}/{self._files} "
                           f"documents, {render.size(self._sent) if self._sent else '0 B'}"
                           f"/{render.size(self._total)}")

    def end(self) -> None:
        if self._bar is not None:
            self._bar.end()


def _metadata(pairs: list[str]) -> dict[str, str]:
    metadata = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise CommandError(f"--metadata {pair!r}: use KEY=VALUE")
        metadata[key] = value
    return metadata


# --- following ---------------------------------------------------------------------------------


def _follow(client: Client, batch_id: str, as_json: bool) -> pb.Batch | None:
    """Watches the batch until it ends; None when the user pressed Ctrl-C."""
    tty = sys.stdout.isatty() and not as_json
    bar = Bar(sys.stdout) if tty else None
    rate = Rate()
    last: pb.Batch | None = None
    logged_at, logged = 0.0, ""
    try:
        for batch in client.stream("WatchBatch", pb.GetBatchRequest(id=batch_id), pb.Batch):
            last = batch
            rate.observe(batch)
            if as_json:
                print_json(batch, compact=True)
                continue
            line = summary(batch, rate.per_second(batch))
            if bar is not None:
                bar.draw(f"{batch.id} {render.progress_bar(fraction(batch))} {line}")
            elif batch.ended or line.split(" ")[0] != logged.split(" ")[0] \
                    or time.monotonic() - logged_at >= _LOG_EVERY:
                print(f"{batch.id} {line}", flush=True)
                logged_at, logged = time.monotonic(), line
    except KeyboardInterrupt:
        if bar is not None:
            bar.end()
        print(f"ocrctl: stopped watching; the batch goes on in ocrd ('ocrctl batch show {batch_id} "
              f"--watch' to follow it, 'ocrctl batch cancel {batch_id}' to stop it)", file=sys.stderr)
        return None
    if bar is not None:
        bar.end()
    if last is None or not last.ended:
        raise CommandError(f"the daemon stopped reporting batch {batch_id} before it ended; "
                           f"it goes on ('ocrctl batch show {batch_id}')")
    return last


def _outcome(batch: pb.Batch, *, quiet: bool, written: bool) -> int:
    """Exit status 0 for a batch that completed every line; else 1, with what to do."""
    if batch.status == "completed" and not batch.failed:
        if not quiet:
            where = "" if written else f" (results: ocrctl batch results {batch.id} -o DIR)"
            print(f"batch {batch.id} completed: {batch.completed} lines{where}")
        return 0
    if quiet:
        return 1
    if batch.status == "failed":
        for error in batch.errors[:_FAILURES_SHOWN]:
            where = f"line {error.line}: " if error.line else ""
            print(f"ocrctl: {where}{error.message}", file=sys.stderr)
        if batch.total == 0:
            print(f"ocrctl: batch {batch.id} failed: its input was refused; fix the lines above "
                  "and submit again", file=sys.stderr)
            return 1
    print(f"ocrctl: batch {batch.id} {batch.status}: {batch.completed} of {batch.total} lines "
          f"completed, {batch.failed} failed; the failed and unfinished lines are in "
          + (f"{ERRORS_FILE}" if written else f"'ocrctl batch results {batch.id}'"), file=sys.stderr)
    return 1


# --- ls, show, cancel --------------------------------------------------------------------------


def run_ls(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 100:
        raise CommandError("--limit must be between 1 and 100")
    page = client.call("ListBatches", pb.ListBatchesRequest(limit=args.limit), pb.ListBatchesResponse)
    if args.json:
        print_json(page)
        return 0
    if not page.batches:
        print("no batches (submit one with 'ocrctl batch submit FILE.jsonl|DIR')")
        return 0
    rows = [[b.id, b.status, b.endpoint, f"{b.completed + b.failed}/{b.total}", str(b.failed),
             render.ago(render.timestamp_or_none(b, "created_at"))] for b in page.batches]
    print(render.table(["ID", "STATUS", "ENDPOINT", "DONE", "FAILED", "CREATED"], rows))
    if page.has_more:
        print(f"(more: --limit {min(100, args.limit * 2)})")
    return 0


def run_show(client: Client, args: argparse.Namespace) -> int:
    if args.watch:
        last = _follow(client, args.id, args.json)
        if last is None:
            return 130
        if not args.json:
            _describe(last)
        return 0
    batch = client.call("GetBatch", pb.GetBatchRequest(id=args.id), pb.Batch)
    if args.json:
        print_json(batch)
    else:
        _describe(batch)
    return 0


def _describe(batch: pb.Batch) -> None:
    now = time.time()
    print(f"{batch.id}  {batch.endpoint}")
    print(f"  status:   {summary(batch, None if batch.ended else average_rate(batch, now))}")
    print(f"  input:    {batch.input_file_id}")
    if batch.ended:
        print(f"  output:   {batch.output_file_id or '-'}")
        print(f"  errors:   {batch.error_file_id or '-'}")
    created = render.timestamp_or_none(batch, "created_at")
    expires = render.timestamp_or_none(batch, "expires_at")
    print(f"  created:  {render.clock_time(created) if created else '-'} ({render.ago(created, now)})")
    if not batch.ended and expires:
        print(f"  expires:  {render.clock_time(expires)} (in {render.duration(expires - now)})")
    for key, value in sorted(batch.metadata.items()):
        print(f"  {key}: {value}")
    for error in batch.errors[:_FAILURES_SHOWN]:
        where = f"line {error.line}: " if error.line else ""
        print(f"  error:    {where}{error.message}" + (f" ({error.param})" if error.param else ""))
    if len(batch.errors) > _FAILURES_SHOWN:
        print(f"  ... and {len(batch.errors) - _FAILURES_SHOWN} more errors (--json shows all)")


def run_cancel(client: Client, args: argparse.Namespace) -> int:
    batch = client.call("CancelBatch", pb.CancelBatchRequest(id=args.id), pb.Batch)
    if args.json:
        print_json(batch)
    else:
        print(f"batch {batch.id} {batch.status}: lines running now finish and are kept; "
              f"{batch.completed + batch.failed} of {batch.total} done so far")
    return 0


# --- results -----------------------------------------------------------------------------------


def run_results(client: Client, args: argparse.Namespace) -> int:
    batch = client.call("GetBatch", pb.GetBatchRequest(id=args.id), pb.Batch)
    if not batch.ended:
        raise CommandError(f"batch {batch.id} is {batch.status} ({summary(batch, None)}); its "
                           f"results come when it ends: 'ocrctl batch show {batch.id} --watch'")
    if not batch.output_file_id and not batch.error_file_id:
        why = "its input was refused ('ocrctl batch show ID' says why)" if batch.status == "failed" \
            else "no line ran"
        raise CommandError(f"batch {batch.id} is {batch.status} and has no results: {why}")
    if args.output:
        return _write_results(client, batch, Path(args.output), quiet=args.json)
    failed = 0
    out = sys.stdout.buffer
    for file_id in (batch.output_file_id, batch.error_file_id):
        for raw in _file_lines(client, file_id):
            out.write(raw)
            failed += line_failure(result_line(raw)) is not None
    out.flush()
    if failed:
        print(f"ocrctl: {failed} of {batch.total} lines failed (their lines carry an error or "
              "a status_code of 400 or more)", file=sys.stderr)
    return 1 if failed or batch.status != "completed" else 0


def _write_results(client: Client, batch: pb.Batch, folder: Path, *, quiet: bool) -> int:
    with ResultWriter(folder, batch.endpoint) as writer:
        for file_id in (batch.output_file_id, batch.error_file_id):
            for raw in _file_lines(client, file_id):
                writer.add(raw)
    written = writer.written
    if not quiet:
        for custom_id, why in written.failed[:_FAILURES_SHOWN]:
            print(f"ocrctl: {custom_id}: {why}", file=sys.stderr)
        if len(written.failed) > _FAILURES_SHOWN:
            print(f"ocrctl: ... and {len(written.failed) - _FAILURES_SHOWN} more failed lines",
                  file=sys.stderr)
        failed_note = f"; {len(written.failed)} failed lines in {folder / ERRORS_FILE}" if written.failed else ""
        print(f"wrote {len(written.files)} files to {folder}{failed_note}")
    return 1 if written.failed or batch.status != "completed" else 0


def _file_lines(client: Client, file_id: str) -> Iterator[bytes]:
    """The lines of a stored file, as they arrive (a line split across messages is joined)."""
    if not file_id:
        return
    rest = b""
    for chunk in client.stream("ReadFile", pb.ReadFileRequest(id=file_id), pb.FileChunk):
        rest += chunk.data
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line.strip():
                yield line + b"\n"
    if rest.strip():
        yield rest + b"\n"


