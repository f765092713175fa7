"""Runs batches, one at a time, oldest first, each line once.

The runner reads the store, not its own memory: what to do next is always what the database
says (a batch's status, its lines without a result), so a daemon killed at any moment resumes
from exactly there. Lines run through ``run_line`` (``ocrd.jobs.line_runner``) up to
``concurrency()`` at a time, grouped by model; each result is committed with the counts before
the next line of that slot starts. Cancelling and expiry are looked at between groups of lines:
lines in flight finish and are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from ocrd.errors import OcrdError, StorageFull
from ocrd.jobs.batch_input import LineError, read_input
from ocrd.jobs.batches import Batch, BatchService
from ocrd.jobs.files import MADE_PURPOSE, FileService
from ocrd.jobs.line_runner import RunLine
from ocrd.jobs.store import disk_full

log = logging.getLogger("ocrd.batches")
IDLE_POLL = 5.0  # seconds between looks at the store when nothing woke the runner
RETRY_PAUSE = 5.0  # after the store failed (a full disk): try again, do not spin
FINISH_PAGE = 1000  # lines read at a time while a finished batch's files are written


class BatchRunner:
    """``ran(model, status)`` is told of each line committed (the metrics count them)."""

    def __init__(self, batches: BatchService, files: FileService, run_line: RunLine,
                 concurrency: Callable[[], int], clock: Callable[[], float] = time.time,
                 ran: Callable[[str, int], None] = lambda model, status: None):
        self._batches = batches
        self._files = files
        self._run_line = run_line
        self._concurrency = concurrency
        self._clock = clock
        self._ran = ran
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled (the daemon stopping: lines in flight are abandoned uncommitted, and
        run again after the restart)."""
        while True:
            self._wake.clear()
            pause = IDLE_POLL
            try:
                for batch in await self._batches.active():
                    await self._advance(batch)
            except OcrdError as exc:
                log.error("batches paused: %s", exc.message)
                pause = RETRY_PAUSE
            except Exception:
                log.exception("batches paused by an unexpected error")
                pause = RETRY_PAUSE
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _advance(self, batch: Batch) -> None:
        if batch.status == "validating":
            if not await self._validate(batch):
                return
        while True:
            batch = await self._batches.get(batch.id)
            if batch.status == "cancelling":
                await self._finish(batch, "cancelled")
                return
            if batch.status == "finalizing":
                # errors on a batch past validation: it met a full state_dir (``_out_of_room``)
                await self._finish(batch, "failed" if batch.row["errors"] else "completed")
                return
            if batch.status != "in_progress":
                return
            if self._clock() >= batch.expires_at:
                await self._finish(batch, "expired")
                return
            concurrency = max(1, self._concurrency())
            rows = await self._batches.pending(batch.id, concurrency * 4)
            if not rows:
                await self._batches.set_status(batch.id, "finalizing", only_from=("in_progress",))
                continue
            try:
                await self._run_lines(batch, rows, concurrency)
            except StorageFull as exc:
                await self._out_of_room(batch, exc)

    async def _out_of_room(self, batch: Batch, exc: StorageFull) -> None:
        """A full state_dir fails the batch: what was committed is kept and goes to its files
        (``finalizing`` until they could be written), the lines not run to the error file. While
        not even that can be recorded, no line runs (its result could not be kept either): the
        failure is tried again now and then, and recorded once there is room."""
        log.error("batch %s fails: %s", batch.id, exc.message)
        error = LineError("storage_full", f"the batch stopped: {exc.message}")
        while True:
            try:
                await self._batches.set_status(batch.id, "finalizing", only_from=("in_progress",),
                                               errors=orjson.dumps([error.to_openai()]).decode())
                return
            except StorageFull:
                await asyncio.sleep(RETRY_PAUSE)

    async def _validate(self, batch: Batch) -> bool:
        try:
            source = await self._files.get(batch.input_file_id)
            data = await self._files.read(source)
        except (OcrdError, OSError):
            await self._batches.fail_validation(batch.id, [LineError(
                "invalid_input_file", f"the input file {batch.input_file_id} is gone (deleted or "
                "expired) before the batch started")])
            return False
        lines, errors = await asyncio.to_thread(read_input, data, batch.endpoint)
        if errors:
            await self._batches.fail_validation(batch.id, errors)
            log.info("batch %s failed validation: %s", batch.id, errors[0].message)
            return False
        started = await self._batches.start(batch.id, lines)
        if started:
            log.info("batch %s: %d lines to %s", batch.id, len(lines), batch.endpoint)
        return started

    async def _run_lines(self, batch: Batch, rows: list[Any], concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(row: Any) -> None:
            async with gate:
                status, body = await self._run_line(batch.endpoint, orjson.loads(row["body"]))
                if await self._batches.record(batch.id, row["line"], row["model"], status,
                                              output_line(row["custom_id"], status, body)):
                    self._ran(row["model"], status)

        # Every line of the group ends (and is committed) before a failure is raised.
        outcomes = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _finish(self, batch: Batch, status: str) -> None:
        """The output and error files from the committed results, written a page of lines at a
        time (a batch's size never sits in memory; lines never run go to the error file as not
        executed), then the final status with their ids, at once."""
        why = {"expired": ("batch_expired", "the batch expired before this line ran"),
               "cancelled": ("batch_cancelled", "the batch was cancelled before this line ran"),
               "failed": ("batch_failed", "the batch failed before this line ran (see the "
                          "batch's errors)")}
        # Files an earlier try stored before a crash kept it from recording them.
        await self._files.remove_made((self._name(batch, "output"), self._name(batch, "error")))
        with self._files.scratch() as done, self._files.scratch() as failed:
            after = 0
            while rows := await self._batches.lines_after(batch.id, after, FINISH_PAGE):
                output: list[bytes] = []
                errors: list[bytes] = []
                for row in rows:
                    if row["result"] is None:
                        code, message = why.get(status, ("batch_not_run", "this line did not run"))
                        errors.append(not_run_line(row["custom_id"], code, message))
                    else:
                        (output if row["status_code"] < 400 else errors).append(row["result"])
                await asyncio.to_thread(self._append, done, output, failed, errors)
                after = rows[-1]["line"]
            output_id = await self._keep(batch, "output", done)
            errors_id = await self._keep(batch, "error", failed)
        await self._batches.finish(batch.id, status, output_file_id=output_id, error_file_id=errors_id)
        log.info("batch %s %s", batch.id, status)

    async def _keep(self, batch: Batch, kind: str, scratch: BinaryIO) -> str | None:
        if scratch.tell() == 0:
            return None
        stored = await self._files.store_file(scratch, filename=self._name(batch, kind),
                                              purpose=MADE_PURPOSE)
        return stored.id

    def _append(self, done: BinaryIO, output: list[bytes], failed: BinaryIO, errors: list[bytes]) -> None:
        try:
            done.writelines(output)
            failed.writelines(errors)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self._files.folder) from None
            raise

    @staticmethod
    def _name(batch: Batch, kind: str) -> str:
        return f"{batch.id}_{kind}.jsonl"




def output_line(custom_id: str, status: int, body: Any) -> bytes:
    """A line of OpenAI's batch output (or error) file for an executed request."""
    return orjson.dumps({
        "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{secrets.token_hex(12)}", "body": body},
        "error": None}) + b"\n"


def not_run_line(custom_id: str, code: str, message: str) -> bytes:
    return orjson.dumps({"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
                         "response": None, "error": {"code": code, "message": message}}) + b"\n"
