"""The state directory's store (``ocrd.jobs``): there and writable, its database whole, and how
much room its files and batches take."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ocrd.jobs.store import DATABASE, FILES
from ocrd.ops.doctor.base import FAIL, OK, WARN, Check, size, user_name

NAME = "state-store"
FIX = "set state_dir (OCRD_STATE_DIR) to a directory the user running ocrd owns"


def check_state_store(state_dir: Path, user: str = "") -> Check:
    user = user or user_name()
    if not state_dir.is_dir():
        return Check(NAME, WARN if not state_dir.exists() else FAIL,
                     f"{state_dir} {'does not exist yet' if not state_dir.exists() else 'is not a directory'}",
                     "" if not state_dir.exists() else FIX)
    if not os.access(state_dir, os.W_OK | os.X_OK):
        return Check(NAME, FAIL, f"{user} cannot write to {state_dir}: uploads and batches fail", FIX)
    database = state_dir / "jobs" / DATABASE
    if not database.exists():
        return Check(NAME, OK, f"{state_dir}: no file or batch stored yet")
    try:
        # Read-only, beside the daemon's own connection (WAL lets readers in while it writes).
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            files = db.execute("SELECT count(*) FROM files").fetchone()[0]
            running = db.execute("SELECT count(*) FROM batches WHERE status IN "
                                 "('validating', 'in_progress', 'finalizing', 'cancelling')").fetchone()[0]
    except sqlite3.Error as exc:
        return Check(NAME, FAIL, f"the jobs database {database} cannot be read: {exc}",
                     "stop ocrd, move the state directory's jobs/ folder aside (its files and batches "
                     "are lost to ocrd), start ocrd again")
    if verdict != "ok":
        return Check(NAME, FAIL, f"the jobs database {database} is damaged: {verdict}",
                     "stop ocrd, move the state directory's jobs/ folder aside, start ocrd again")
    used = _bytes(state_dir / "jobs" / FILES) + sum(
        _bytes(path) for path in state_dir.joinpath("jobs").glob(f"{DATABASE}*"))
    return Check(NAME, OK, f"{state_dir}: {files} file{'s' if files != 1 else ''}, {running} batch"
                           f"{'es' if running != 1 else ''} running, {size(used)} used")


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for entry in path.iterdir() if path.is_dir() else ():
        if entry.is_file():
            total += entry.stat().st_size
    return total
