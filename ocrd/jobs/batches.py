"""OpenAI's Batch objects over the jobs store: create, look up, list, cancel; and the store side
of running one (``ocrd.jobs.batch_runner`` does the running).

A batch moves validating -> in_progress -> finalizing -> completed, or to failed (its input file
is malformed: ``errors`` says where), expired (its 24 hours passed first) or cancelling ->
cancelled. Each line's result is committed with the batch's counts in one transaction, so the
counts are always those of the committed results, and a restart finds exactly the lines left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ocrd.errors import Conflict, InvalidRequest, ObjectNotFound
from ocrd.jobs.batch_input import ENDPOINTS, InputLine, LineError
from ocrd.jobs.files import FileService
from ocrd.jobs.store import JobStore, transaction

WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
LIST_LIMIT = 100  # OpenAI's most per page of GET /v1/batches (default 20)
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")
WATCH_PAUSE = 0.25  # a watcher is told at most this often (a batch of short lines changes far faster)
WATCH_POLL = 5.0  # and looks anyway this often, whatever woke it or not
KEEP_ENDED = 30 * 24 * 3600  # an ended batch is forgotten with its files (which expire then)
TIMES = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
         "cancelling_at", "cancelled_at")


@dataclass(frozen=True)
class Batch:
    row: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def endpoint(self) -> str:
        return str(self.row["endpoint"])

    @property
    def input_file_id(self) -> str:
        return str(self.row["input_file_id"])

    @property
    def expires_at(self) -> int:
        return int(self.row["expires_at"])

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``Batch`` object."""
        row = self.row
        errors = json.loads(row["errors"]) if row["errors"] else None
        return {
            "id": row["id"], "object": "batch", "endpoint": row["endpoint"],
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": row["input_file_id"], "completion_window": row["completion_window"],
            "status": row["status"], "output_file_id": row["output_file_id"],
            "error_file_id": row["error_file_id"], "created_at": row["created_at"],
            "expires_at": row["expires_at"], **{name: row[name] for name in TIMES},
            "request_counts": {"total": row["total"], "completed": row["completed"],
                               "failed": row["failed"]},
            "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
        }


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's rule: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()):
        raise InvalidRequest("metadata must be an object of at most 16 string pairs (keys up to "
                             "64 characters, values up to 512)", param="metadata")
    return metadata


class BatchService:
    """One per daemon (``AppState.batches``); ``changed`` wakes the runner."""

    def __init__(self, store: JobStore, files: FileService, clock: Callable[[], float] = time.time,
                 changed: Callable[[], None] = lambda: None):
        self._store = store
        self._files = files
        self._clock = clock
        self.changed = changed
        # Lines of running batches not yet run, per model (the ocrd_batch_lines_queued gauge):
        # read from the store at start (``count_queued``), then kept as lines start and finish.
        self.queued: collections.Counter[str] = collections.Counter()
        # Set (and replaced) at every change of a batch's status or counts: wakes ``watch``.
        self._change = asyncio.Event()

    def count_queued(self) -> None:
        """At start, before the runner: what the store holds."""
        rows = self._store.call_now(lambda db: db.execute(
            "SELECT model, count(*) AS n FROM batch_lines WHERE result IS NULL GROUP BY model").fetchall())
        self.queued = collections.Counter({row["model"]: row["n"] for row in rows})

    async def create(self, *, input_file_id: Any, endpoint: Any, completion_window: Any,
                     metadata: Any = None) -> Batch:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        if completion_window != WINDOW:
            raise InvalidRequest('completion_window must be "24h"', param="completion_window")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise InvalidRequest("input_file_id is required: the id of an uploaded JSONL file "
                                 "(POST /v1/files, purpose batch)", param="input_file_id")
        pairs = check_metadata(metadata)
        source = await self._files.get(input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(f"file {input_file_id} was uploaded with purpose "
                                 f"{source.purpose!r}; a batch's input needs purpose batch",
                                 param="input_file_id")
        now = int(self._clock())
        batch_id = f"batch_{secrets.token_hex(12)}"
        row = {"id": batch_id, "endpoint": endpoint, "input_file_id": input_file_id,
               "completion_window": WINDOW, "status": "validating",
               "metadata": json.dumps(pairs) if pairs is not None else None,
               "created_at": now, "expires_at": now + WINDOW_SECONDS}

        def insert(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(f"INSERT INTO batches ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           tuple(row.values()))

        await self._store.call(insert)
        self._signal()
        self.changed()
        return await self.get(batch_id)

    async def get(self, batch_id: str) -> Batch:
        row = await self._store.call(lambda db: db.execute(
            "SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone())
        if row is None:
            raise ObjectNotFound(f"No such Batch object: {batch_id[:80]}", param="batch_id")
        return Batch(dict(row))

    async def list_batches(self, *, after: str | None = None, limit: int = 20) -> tuple[list[Batch], bool]:
        """Newest first, after the batch ``after``; and whether more follow."""
        if not 1 <= limit <= LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {LIST_LIMIT}", param="limit")
        if after:
            await self.get(after)

        def page(db: sqlite3.Connection) -> list[sqlite3.Row]:
            if after:
                return db.execute("SELECT * FROM batches WHERE rowid < (SELECT rowid FROM batches "
                                  "WHERE id = ?) ORDER BY rowid DESC LIMIT ?", (after, limit + 1)).fetchall()
            return db.execute("SELECT * FROM batches ORDER BY rowid DESC LIMIT ?", (limit + 1,)).fetchall()

        rows = await self._store.call(page)
        return [Batch(dict(row)) for row in rows[:limit]], len(rows) > limit

    async def cancel(self, batch_id: str) -> Batch:
        """validating or in_progress -> cancelling (the runner finishes the lines in flight and
        keeps what was done); anything else is a 409 saying what it is."""
        batch = await self.get(batch_id)
        if batch.status not in ("validating", "in_progress"):
            if batch.status in ("cancelling", "cancelled"):
                return batch
            raise Conflict(f"batch {batch_id} is {batch.status}; only a validating or in_progress "
                           "batch can be cancelled")
        await self.set_status(batch_id, "cancelling", only_from=("validating", "in_progress"))
        self.changed()
        return await self.get(batch_id)

    async def watch(self, batch_id: str) -> AsyncIterator[Batch]:
        """The batch now, then each time it changed (at most every ``WATCH_PAUSE``), until it
        has ended."""
        last: dict[str, Any] | None = None
        while True:
            change = self._change  # before reading: a change after the read wakes the wait
            batch = await self.get(batch_id)
            if batch.row != last:
                last = batch.row
                yield batch
            if batch.ended:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(change.wait(), WATCH_POLL)
            await asyncio.sleep(WATCH_PAUSE)

    def _signal(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def files_in_use(self) -> set[str]:
        """Input files of batches that have not finished: they may not be deleted."""
        rows = await self._store.call(lambda db: db.execute(
            f"SELECT input_file_id FROM batches WHERE status IN ({', '.join('?' * len(ACTIVE))})",
            ACTIVE).fetchall())
        return {row["input_file_id"] for row in rows}

    async def remove_ended(self) -> int:
        """Forgets batches that ended ``KEEP_ENDED`` ago (their result files have expired with
        them); how many."""
        cutoff = int(self._clock()) - KEEP_ENDED
        ended = "COALESCE(completed_at, failed_at, expired_at, cancelled_at)"

        def remove(db: sqlite3.Connection) -> int:
            with transaction(db):
                return db.execute(f"DELETE FROM batches WHERE status IN ({', '.join('?' * len(FINAL))}) "
                                  f"AND {ended} <= ?", (*FINAL, cutoff)).rowcount

        return await self._store.call(remove)

    # --- the runner's side ---------------------------------------------------------------------

    async def active(self) -> list[Batch]:
        rows = await self._store.call(lambda db: db.execute(
            f"SELECT * FROM batches WHERE status IN ({', '.join('?' * len(ACTIVE))}) ORDER BY rowid",
            ACTIVE).fetchall())
        return [Batch(dict(row)) for row in rows]

    async def set_status(self, batch_id: str, status: str, *, only_from: tuple[str, ...] = (),
                         **fields: Any) -> bool:
        """Moves the batch to ``status`` (stamping its time) with ``fields``; with ``only_from``,
        only from one of those (False: it was elsewhere, nothing changed)."""
        now = int(self._clock())
        values = {**fields, "status": status}
        if f"{status}_at" in TIMES:
            values[f"{status}_at"] = now
        sql = f"UPDATE batches SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?"
        params: list[Any] = [*values.values(), batch_id]
        if only_from:
            sql += f" AND status IN ({', '.join('?' * len(only_from))})"
            params.extend(only_from)

        def update(db: sqlite3.Connection) -> bool:
            with transaction(db):
                return db.execute(sql, params).rowcount == 1

        moved = await self._store.call(update)
        self._signal()
        return moved

    async def start(self, batch_id: str, lines: list[InputLine]) -> bool:
        """validating -> in_progress with its lines stored, in one transaction."""
        now = int(self._clock())

        def store(db: sqlite3.Connection) -> bool:
            with transaction(db):
                moved = db.execute("UPDATE batches SET status = 'in_progress', in_progress_at = ?, "
                                   "total = ? WHERE id = ? AND status = 'validating'",
                                   (now, len(lines), batch_id)).rowcount == 1
                if moved:
                    db.executemany("INSERT INTO batch_lines (batch_id, line, custom_id, model, body) "
                                   "VALUES (?, ?, ?, ?, ?)",
                                   [(batch_id, line.number, line.custom_id, line.model, line.body)
                                    for line in lines])
                return moved

        started = await self._store.call(store)
        if started:
            self.queued.update(line.model for line in lines)
            self._signal()
        return started

    async def fail_validation(self, batch_id: str, errors: list[LineError]) -> None:
        await self.set_status(batch_id, "failed", only_from=("validating",),
                              errors=json.dumps([error.to_openai() for error in errors]))

    async def pending(self, batch_id: str, limit: int) -> list[sqlite3.Row]:
        """Lines without a result, grouped by model (a batch does not make models swap back and
        forth), in input order within each."""
        return await self._store.call(lambda db: db.execute(
            "SELECT line, custom_id, model, body FROM batch_lines WHERE batch_id = ? AND result IS "
            "NULL ORDER BY model, line LIMIT ?", (batch_id, limit)).fetchall())

    async def record(self, batch_id: str, line: int, model: str, status_code: int, result: bytes) -> bool:
        """A line's result and the batch's counts, committed together, once: a line that has a
        result is never counted or written again."""
        counter = "completed" if status_code < 400 else "failed"

        def commit(db: sqlite3.Connection) -> bool:
            with transaction(db):
                done = db.execute("UPDATE batch_lines SET status_code = ?, result = ? WHERE batch_id = ? "
                                  "AND line = ? AND result IS NULL",
                                  (status_code, result, batch_id, line)).rowcount == 1
                if done:
                    db.execute(f"UPDATE batches SET {counter} = {counter} + 1 WHERE id = ?", (batch_id,))
                return done

        recorded = await self._store.call(commit)
        if recorded:
            self.queued[model] -= 1
            self._signal()
        return recorded

    async def finish(self, batch_id: str, status: str, *, output_file_id: str | None,
                     error_file_id: str | None) -> None:
        """The final status with the result files' ids; the lines go in the same transaction
        (their results are in the files now), so a finished batch keeps only its row."""
        now = int(self._clock())

        def commit(db: sqlite3.Connection) -> list[sqlite3.Row]:
            with transaction(db):
                left = db.execute("SELECT model, count(*) AS n FROM batch_lines WHERE batch_id = ? AND "
                                  "result IS NULL GROUP BY model", (batch_id,)).fetchall()
                db.execute(f"UPDATE batches SET status = ?, {status}_at = ?, output_file_id = ?, "
                           "error_file_id = ? WHERE id = ?",
                           (status, now, output_file_id, error_file_id, batch_id))
                db.execute("DELETE FROM batch_lines WHERE batch_id = ?", (batch_id,))
                return left

        if f"{status}_at" not in TIMES:
            raise ValueError(f"{status} is not a final status")
        for row in await self._store.call(commit):
            self.queued[row["model"]] -= row["n"]
        self.queued = +self.queued  # drop models with nothing left
        self._signal()

    async def lines_after(self, batch_id: str, after: int, limit: int) -> list[sqlite3.Row]:
        """The next ``limit`` lines after line ``after``, in input order, with their results
        (None: not run): what a finished batch's files are written from, a page at a time."""
        return await self._store.call(lambda db: db.execute(
            "SELECT line, custom_id, status_code, result FROM batch_lines WHERE batch_id = ? AND "
            "line > ? ORDER BY line LIMIT ?", (batch_id, after, limit)).fetchall())
