"""OpenAI's Files API over the jobs store: uploads kept in ``state_dir/jobs/files``, one row each.

A file is written whole before it exists for anyone: copied to a hidden name in the files folder,
flushed to disk, renamed to its id, and only then given its row (one committed transaction). A
crash in between leaves a hidden partial file or a file without a row, both removed at the next
start (``recover``); a file with a row is always complete. Expired files (``expires_after``, or
30 days for ``purpose=batch`` as OpenAI does) are invisible from their expiry on and removed by
``remove_expired``, which the daemon runs now and then.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ocrd.errors import Conflict, InvalidRequest, ObjectNotFound, PayloadTooLarge
from ocrd.jobs.store import JobStore, disk_full, transaction

PURPOSES = ("batch", "ocr", "user_data")
MADE_PURPOSE = "batch_output"  # OpenAI's purpose for the files a batch makes
BATCH_FILE_SECONDS = 30 * 24 * 3600  # OpenAI: batch files expire after 30 days unless told
EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 24 * 3600  # OpenAI's bounds for expires_after.seconds
LIST_LIMIT = 10_000  # OpenAI's default and most for GET /v1/files
_PARTIAL = ".upload-"
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``OpenAIFile`` object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


def check_purpose(purpose: str | None) -> str:
    if not purpose:
        raise InvalidRequest("purpose is required: batch, ocr or user_data", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose {purpose[:40]!r} is not one ocrd stores files for; use batch "
                             "(JSONL input of a batch), ocr (documents for /v1/ocr) or user_data",
                             param="purpose")
    return purpose


def expiry(purpose: str, anchor: str | None, seconds: str | int | None, now: int) -> int | None:
    """``expires_at`` for an upload: ``expires_after`` (anchor ``created_at``), else OpenAI's
    default (30 days for batch files, never for the rest)."""
    if anchor is None and seconds is None:
        return now + BATCH_FILE_SECONDS if purpose == "batch" else None
    if anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be created_at", param="expires_after.anchor")
    try:
        value = int(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidRequest("expires_after.seconds must be a whole number of seconds",
                             param="expires_after.seconds") from None
    if not EXPIRES_MIN <= value <= EXPIRES_MAX:
        raise InvalidRequest(f"expires_after.seconds must be between {EXPIRES_MIN} (an hour) and "
                             f"{EXPIRES_MAX} (30 days)", param="expires_after.seconds")
    return now + value


class FileService:
    """One per daemon (``AppState.files``)."""

    def __init__(self, store: JobStore, clock: Callable[[], float] = time.time):
        self._store = store
        self._clock = clock
        # Files that may not be deleted now (the inputs of running batches; set by the daemon).
        self.in_use: Callable[[], Awaitable[set[str]]] = _nothing_in_use

    async def create(self, source: BinaryIO, *, filename: str, purpose: str, max_bytes: int,
                     expires_anchor: str | None = None, expires_seconds: str | int | None = None
                     ) -> StoredFile:
        """Stores the upload ``source`` (read from its start); errors before anything is kept."""
        check_purpose(purpose)
        now = int(self._clock())
        expires_at = expiry(purpose, expires_anchor, expires_seconds, now)
        return await self._keep(source, _clean_filename(filename), purpose, max_bytes, now, expires_at)

    async def store_file(self, source: BinaryIO, *, filename: str, purpose: str) -> StoredFile:
        """A file ocrd makes itself (a batch's output: purpose ``MADE_PURPOSE``), copied from
        ``source`` (read from its start) and kept as an upload is, for 30 days as OpenAI's
        batch files."""
        now = int(self._clock())
        return await self._keep(source, filename, purpose, 2**62, now, now + BATCH_FILE_SECONDS)

    @property
    def folder(self) -> Path:
        """Where the files are (``state_dir/jobs/files``)."""
        return self._store.files_dir

    def scratch(self) -> BinaryIO:
        """A nameless file beside the stored ones, gone when closed (or at a crash): where a file
        ocrd makes is put together before ``store_file`` keeps it."""
        return tempfile.TemporaryFile(dir=self._store.files_dir)

    async def _keep(self, source: BinaryIO, filename: str, purpose: str, max_bytes: int, now: int,
                    expires_at: int | None) -> StoredFile:
        """The file written whole, then its row committed (the file goes again if that fails)."""
        file_id = f"file-{secrets.token_hex(12)}"
        size = await asyncio.to_thread(self._write, source, file_id, max_bytes)
        stored = StoredFile(file_id, filename, purpose, size, now, expires_at)
        try:
            await self._store.call(lambda db: _insert(db, stored))
        except BaseException:
            (self._store.files_dir / file_id).unlink(missing_ok=True)
            raise
        return stored

    async def read(self, stored: StoredFile) -> bytes:
        return await asyncio.to_thread(self.content_path(stored).read_bytes)

    async def read_by_id(self, file_id: str) -> bytes:
        """The bytes of file ``file_id`` (ObjectNotFound: there is none)."""
        return await self.read(await self.get(file_id))

    async def get(self, file_id: str) -> StoredFile:
        now = int(self._clock())
        row = await self._store.call(lambda db: db.execute(
            "SELECT * FROM files WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (file_id, now)).fetchone())
        if row is None:
            raise ObjectNotFound(f"No such File object: {file_id[:80]}", param="file_id")
        return _from_row(row)

    async def list(self, *, purpose: str | None = None, limit: int = LIST_LIMIT,
                   after: str | None = None, order: str = "desc") -> tuple[list[StoredFile], bool]:
        """A page of files, newest first (``order=desc``) or oldest first, after the file
        ``after``; and whether more follow."""
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be asc or desc", param="order")
        if not 1 <= limit <= LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {LIST_LIMIT}", param="limit")
        if purpose is not None:
            check_purpose(purpose)
        cursor = await self.get(after) if after else None
        now = int(self._clock())

        def page(db: sqlite3.Connection) -> list[sqlite3.Row]:
            # Only fixed text goes into the statement; every value is a parameter.
            clauses: list[str] = ["(expires_at IS NULL OR expires_at > ?)"]
            values: list[str | int] = [now]
            if purpose is not None:
                clauses.append("purpose = ?")
                values.append(purpose)
            if cursor is not None:  # rowid: the order files were stored in, to the upload
                clauses.append(f"rowid {'>' if order == 'asc' else '<'} (SELECT rowid FROM files WHERE id = ?)")
                values.append(cursor.id)
            direction = "ASC" if order == "asc" else "DESC"
            return db.execute(f"SELECT * FROM files WHERE {' AND '.join(clauses)} "
                              f"ORDER BY rowid {direction} LIMIT ?", (*values, limit + 1)).fetchall()

        rows = await self._store.call(page)
        return [_from_row(row) for row in rows[:limit]], len(rows) > limit

    def content_path(self, stored: StoredFile) -> Path:
        return self._store.files_dir / stored.id

    async def delete(self, file_id: str) -> None:
        await self.get(file_id)  # 404 for what is not there (or expired)
        if file_id in await self.in_use():
            raise Conflict(f"file {file_id} is the input of a batch that has not finished; cancel "
                           "the batch (POST /v1/batches/ID/cancel) or wait for it, then delete the file",
                           param="file_id")
        await self._store.call(lambda db: _delete(db, file_id))
        (self._store.files_dir / file_id).unlink(missing_ok=True)

    async def remove_made(self, filenames: tuple[str, ...]) -> None:
        """Removes files ocrd made (purpose ``batch_output``) by these names."""
        def remove(db: sqlite3.Connection) -> list[str]:
            marks = ", ".join("?" * len(filenames))
            ids = [row["id"] for row in db.execute(
                f"SELECT id FROM files WHERE purpose = ? AND filename IN ({marks})",
                (MADE_PURPOSE, *filenames)).fetchall()]
            with transaction(db):
                db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
            return ids

        for file_id in await self._store.call(remove):
            (self._store.files_dir / file_id).unlink(missing_ok=True)

    async def remove_expired(self) -> int:
        """Removes files past their expiry; how many."""
        now = int(self._clock())

        def expired(db: sqlite3.Connection) -> list[str]:
            ids = [row["id"] for row in db.execute(
                "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).fetchall()]
            with transaction(db):
                db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
            return ids

        ids = await self._store.call(expired)
        for file_id in ids:
            (self._store.files_dir / file_id).unlink(missing_ok=True)
        return len(ids)

    def recover(self) -> None:
        """At start, before anything is served: partial uploads and files without a row (a crash
        between writing and committing) go."""
        rows = self._store.call_now(lambda db: db.execute("SELECT id FROM files").fetchall())
        known = {row["id"] for row in rows}
        for entry in self._store.files_dir.iterdir():
            if entry.name.startswith(_PARTIAL) or entry.name not in known:
                entry.unlink(missing_ok=True)

    def _write(self, source: BinaryIO, file_id: str, max_bytes: int) -> int:
        folder = self._store.files_dir
        partial = folder / f"{_PARTIAL}{file_id}"
        size = 0
        try:
            source.seek(0)
            with open(partial, "xb") as target:
                while chunk := source.read(_COPY_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes "
                                              "(limits.max_file_bytes)", param="file")
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
            os.chmod(partial, 0o600)
            os.rename(partial, folder / file_id)
            _fsync_dir(folder)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(folder) from None
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size


async def _nothing_in_use() -> set[str]:
    return set()


def _insert(db: sqlite3.Connection, stored: StoredFile) -> None:
    with transaction(db):
        db.execute("INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (stored.id, stored.filename, stored.purpose, stored.bytes, stored.created_at,
                    stored.expires_at))


def _delete(db: sqlite3.Connection, file_id: str) -> None:
    with transaction(db):
        db.execute("DELETE FROM files WHERE id = ?", (file_id,))


def _from_row(row: sqlite3.Row) -> StoredFile:
    return StoredFile(row["id"], row["filename"], row["purpose"], row["bytes"], row["created_at"],
                      row["expires_at"])


def _clean_filename(filename: str) -> str:
    """The name as the client gave it (shown back only), without a path or control characters."""
    name = os.path.basename((filename or "").replace("\\", "/"))
    name = "".join(char for char in name if char.isprintable())[:255]
    return name or "upload"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
