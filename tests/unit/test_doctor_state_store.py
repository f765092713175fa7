"""``check_state_store``: the jobs store read beside a live one (real SQLite in tmp_path)."""

from __future__ import annotations

import io
from pathlib import Path

from ocrd.jobs.files import FileService
from ocrd.jobs.store import DATABASE, JobStore
from ocrd.ops.doctor.base import FAIL, OK, WARN
from ocrd.ops.doctor.state_checks import check_state_store


def test_a_state_dir_not_made_yet_is_a_warning_and_a_file_in_its_place_a_failure(tmp_path: Path):
    assert check_state_store(tmp_path / "state").status == WARN
    (tmp_path / "file").write_text("x")
    failed = check_state_store(tmp_path / "file")
    assert failed.status == FAIL and "OCRD_STATE_DIR" in failed.fix


async def test_a_store_in_use_is_read_with_its_counts_and_size(tmp_path: Path):
    store = JobStore(tmp_path)
    store.open()
    try:
        files = FileService(store)
        await files.create(io.BytesIO(b"x" * 3 * 2**20), filename="a", purpose="user_data", max_bytes=2**30)
        check = check_state_store(tmp_path)  # the store is open meanwhile, as in the daemon
    finally:
        store.close()
    assert check.status == OK, check
    assert check.message == f"{tmp_path}: 1 file, 0 batches running, 3 MiB used"


def test_a_damaged_database_is_a_failure_saying_what_to_do(tmp_path: Path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / DATABASE).write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    check = check_state_store(tmp_path)
    assert check.status == FAIL and "jobs database" in check.message and "move" in check.fix
