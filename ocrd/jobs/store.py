"""The jobs store: one SQLite database in ``state_dir/jobs`` and the files beside it.

SQLite because it needs nothing else running and survives a SIGKILL at any moment: every change
is a transaction, committed (``synchronous=FULL``, WAL journal) before the caller counts it. All
of the database work happens on one thread of the store's own (SQLite connections are not to be
shared between threads, and one writer at a time is what SQLite allows anyway); the event loop
awaits it. The schema is versioned by SQLite's ``user_version``; each version's statements run
once, in a transaction, on a store older than they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ocrd.errors import StorageFull
from ocrd.private_dirs import ensure_private_dir

T = TypeVar("T")

DATABASE = "ocrd.sqlite3"
FILES = "files"
# Version n's statements, applied in order to a store at version n-1.
SCHEMA: tuple[tuple[str, ...], ...] = (
    (
        # rowid (implicit) orders the files as they were stored: created_at has whole seconds.
        """CREATE TABLE files (
               id TEXT PRIMARY KEY,
               filename TEXT NOT NULL,
               purpose TEXT NOT NULL,
               bytes INTEGER NOT NULL,
               created_at INTEGER NOT NULL,
               expires_at INTEGER
           )""",
        "CREATE INDEX files_by_expiry ON files (expires_at)",
    ),
    (
        # One row per batch; its times as OpenAI's Batch object has them (None: not reached).
        """CREATE TABLE batches (
               id TEXT PRIMARY KEY,
               endpoint TEXT NOT NULL,
               input_file_id TEXT NOT NULL,
               completion_window TEXT NOT NULL,
               status TEXT NOT NULL,
               metadata TEXT,
               errors TEXT,
               output_file_id TEXT,
               error_file_id TEXT,
               total INTEGER NOT NULL DEFAULT 0,
               completed INTEGER NOT NULL DEFAULT 0,
               failed INTEGER NOT NULL DEFAULT 0,
               created_at INTEGER NOT NULL,
               expires_at INTEGER NOT NULL,
               in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER,
               failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER
           )""",
        "CREATE INDEX batches_by_status ON batches (status)",
        # One row per input line; result is its output line (JSON), set once, when it is done:
        # what makes a restart resume without losing or repeating a line.
        """CREATE TABLE batch_lines (
               batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
               line INTEGER NOT NULL,
               custom_id TEXT NOT NULL,
               model TEXT NOT NULL,
               body BLOB NOT NULL,
               status_code INTEGER,
               result BLOB,
               PRIMARY KEY (batch_id, line)
           ) WITHOUT ROWID""",
        "CREATE INDEX batch_lines_pending ON batch_lines (batch_id, model, line) WHERE result IS NULL",
    ),
)


class JobStore:
    """The database and the folder of uploaded files; ``call`` runs a function with the
    connection on the store's thread."""

    def __init__(self, state_dir: Path):
        self.root = Path(state_dir) / "jobs"
        self.files_dir = self.root / FILES
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ocrd-jobs")
        self._connection: sqlite3.Connection | None = None

    def open(self) -> None:
        """Creates the folders (0700) and the database, or brings an older one up to date."""
        fix = "set state_dir to a directory of your own (OCRD_STATE_DIR)"
        for folder in (self.root, self.files_dir):
            ensure_private_dir(folder, mode=0o700, what="state_dir", fix=fix,
                               holds="files (uploads, batch results)")
        self._thread.submit(self._connect).result()

    def close(self) -> None:
        def disconnect() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._thread.submit(disconnect).result()
        self._thread.shutdown(wait=True)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` on the store's thread; a full disk is ``StorageFull`` (507)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, work)

    def call_now(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``call`` for start-up, before the event loop serves anything: waits for the answer."""
        return self._thread.submit(self._run, work).result()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        assert self._connection is not None, "the store is not open"
        try:
            return work(self._connection)
        except sqlite3.OperationalError as exc:
            if "disk is full" in str(exc) or "database or disk is full" in str(exc):
                raise disk_full(self.root) from None
            raise

    def _connect(self) -> None:
        connection = sqlite3.connect(self.root / DATABASE, isolation_level=None, check_same_thread=True)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # committed means on disk
        connection.execute("PRAGMA foreign_keys=ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for number, statements in enumerate(SCHEMA[version:], start=version + 1):
            with transaction(connection):
                for statement in statements:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version={number}")
        os.chmod(self.root / DATABASE, 0o600)
        self._connection = connection


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception), for a connection in
    autocommit mode: the caller decides what one transaction holds."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def disk_full(where: Path) -> StorageFull:
    return StorageFull(f"no space left in {where} (state_dir): free some, or delete files and "
                       "batches you no longer need (DELETE /v1/files/ID)")
