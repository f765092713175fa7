"""What every diagnostic check shares: the ``Check`` it returns, the planner's word on a model,
and who the checks run as (``os.access`` answers for this process's user, so the daemon's
checks speak for the daemon's user).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ocrd.planning.planner import Decision

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"


@dataclass(frozen=True)
class Check:
    name: str  # short and stable, e.g. "nvml", "hf-cache-access"
    status: str  # OK, WARN, FAIL or SKIPPED
    message: str  # what was found, one line
    fix: str = ""  # what to do, one line; empty when nothing needs doing


@dataclass(frozen=True)
class ModelFit:
    """The planner's word on the model whose memory is checked, or why there is none."""

    model: str
    decision: Decision | None = None
    error: str = ""  # the model cannot be planned: not downloaded, no engine, ...


def check_user(uid: int, gid: int, groups: Sequence[int]) -> Check:
    """Who ocrd runs as; the other checks say what that user may open."""
    user, group = user_name(uid), group_name(gid)
    others = ", ".join(group_name(g) for g in sorted(set(groups) - {gid})) or "none"
    message = f"runs as {user} (uid {uid}), group {group} (gid {gid}); other groups: {others}"
    if uid == 0:
        return Check("user", WARN, f"{message}; as root, a model's remote code (trust_remote_code) "
                                   f"runs as root too",
                     "run ocrd as its own user, as the packaged unit does (User=ocrd)")
    return Check("user", OK, message)


def user_name(uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def group_of(path: Path) -> str | None:
    try:
        return group_name(path.stat().st_gid)
    except OSError:
        return None


def size(num_bytes: int) -> str:
    mib = max(0, num_bytes) / 2**20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"
