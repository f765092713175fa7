"""``FileService`` over a real ``JobStore`` (SQLite in tmp_path) with a clock of the test's own:
expiry, the schema's versioning, and that a failed upload keeps nothing."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from ocrd.errors import ObjectNotFound, PayloadTooLarge
from ocrd.jobs.files import FileService
from ocrd.jobs.store import DATABASE, SCHEMA, JobStore, transaction


@pytest.fixture
def store(tmp_path: Path):
    opened = JobStore(tmp_path)
    opened.open()
    yield opened
    opened.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_an_expired_file_is_gone_at_once_and_removed_by_the_sweep(store):
    clock = Clock()
    files = FileService(store, clock)
    short = await files.create(io.BytesIO(b"a"), filename="a.txt", purpose="user_data",
                               max_bytes=10, expires_anchor="created_at", expires_seconds=3600)
    kept = await files.create(io.BytesIO(b"b"), filename="b.txt", purpose="user_data", max_bytes=10)
    clock.now += 3600
    with pytest.raises(ObjectNotFound):
        await files.get(short.id)  # invisible from its expiry on, swept or not
    assert [f.id for f in (await files.list())[0]] == [kept.id]
    assert (store.files_dir / short.id).exists()
    assert await files.remove_expired() == 1
    assert not (store.files_dir / short.id).exists() and (store.files_dir / kept.id).exists()
    assert await files.remove_expired() == 0


async def test_a_file_over_the_limit_keeps_nothing(store):
    files = FileService(store, Clock())
    with pytest.raises(PayloadTooLarge):
        await files.create(io.BytesIO(b"x" * 11), filename="x", purpose="ocr", max_bytes=10)
    assert list(store.files_dir.iterdir()) == []
    assert (await files.list())[0] == []


async def test_filenames_are_shown_back_without_paths_or_control_characters(store):
    files = FileService(store, Clock())
    stored = await files.create(io.BytesIO(b"x"), filename="../../etc/pass\x00wd\n", purpose="ocr",
                                max_bytes=10)
    assert stored.filename == "passwd"
    assert (await files.get(stored.id)).filename == "passwd"


def test_the_schema_is_versioned_and_an_open_store_keeps_its_rows(tmp_path: Path):
    first = JobStore(tmp_path)
    first.open()
    first.call_now(lambda db: db.execute(
        "INSERT INTO files VALUES ('file-1', 'a', 'ocr', 1, 0, NULL)"))
    first.close()
    again = JobStore(tmp_path)
    again.open()
    try:
        assert again.call_now(lambda db: db.execute("PRAGMA user_version").fetchone()[0]) == len(SCHEMA)
        assert again.call_now(lambda db: db.execute("SELECT id FROM files").fetchall())[0]["id"] == "file-1"
        assert oct((tmp_path / "jobs" / DATABASE).stat().st_mode & 0o777) == "0o600"
    finally:
        again.close()


def test_a_transaction_that_fails_leaves_nothing(store):
    def half(db: sqlite3.Connection) -> None:
        with transaction(db):
            db.execute("INSERT INTO files VALUES ('file-2', 'a', 'ocr', 1, 0, NULL)")
            raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        store.call_now(half)
    assert store.call_now(lambda db: db.execute("SELECT count(*) FROM files").fetchone()[0]) == 0
