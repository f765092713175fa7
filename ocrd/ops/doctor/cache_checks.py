"""Checks of the shared Hugging Face cache: there, readable and writable by this user, not on a
Windows drive under WSL, what vLLM sees of it, and downloads left incomplete."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ocrd.cache.inventory import find_snapshot
from ocrd.ops.doctor.base import FAIL, OK, SKIPPED, WARN, Check, size, user_name

WINDOWS_DRIVE = re.compile(r"^/mnt/[a-zA-Z](/|\Z)")  # \Z: $ also matches before a final newline


def check_hf_cache(hub_dir: Path) -> Check:
    if hub_dir.is_dir():
        models = sum(1 for entry in _listdir(hub_dir) if entry.startswith("models--"))
        return Check("hf-cache", OK, f"{hub_dir} ({models} model{'s' if models != 1 else ''})")
    if hub_dir.exists():
        return Check("hf-cache", FAIL, f"{hub_dir} exists but is not a directory",
                     "move it away, or point cache.hub_dir (or HF_HUB_CACHE) elsewhere")
    return Check("hf-cache", WARN, f"{hub_dir} does not exist yet: no model is downloaded",
                 "download one: ocrctl pull MODEL (or hf download REPO with the same HF_HUB_CACHE)")


def check_hf_cache_access(hub_dir: Path, user: str = "") -> Check:
    """Read access is needed to load models; write access to download them (and for locks)."""
    name = "hf-cache-access"
    user = user or user_name()
    target = hub_dir if hub_dir.exists() else _existing_parent(hub_dir)
    if target.exists() and not target.is_dir():
        return Check(name, SKIPPED, f"{hub_dir} is not a directory (see hf-cache)")
    if hub_dir.exists() and not os.access(hub_dir, os.R_OK | os.X_OK):
        return Check(name, FAIL, f"{user} cannot read {hub_dir}: no cached model can load",
                     f"sudo chown -R {user} {hub_dir} (or give its group read access and add {user})")
    if not os.access(target, os.W_OK | os.X_OK):
        what = hub_dir if target == hub_dir else f"{target}, so it cannot create {hub_dir}"
        return Check(name, WARN, f"{user} cannot write to {what}: downloads (ocrctl pull) fail",
                     f"sudo chown -R {user} {target}, or point cache.hub_dir at a directory "
                     f"{user} owns")
    if target != hub_dir:
        return Check(name, OK, f"{user} can create {hub_dir} (in {target})")
    return Check(name, OK, f"{user} can read and write {hub_dir}")


def check_hf_cache_wsl(hub_dir: Path, proc_version: str) -> Check:
    name = "hf-cache-wsl"
    if "microsoft" not in proc_version.lower():
        return Check(name, SKIPPED, "not running under WSL")
    real = os.path.realpath(hub_dir)
    if WINDOWS_DRIVE.match(str(hub_dir)) or WINDOWS_DRIVE.match(real):
        return Check(name, WARN, f"WSL: the cache {real} is on a Windows drive: slow to read, and "
                                 f"without symlinks every file is stored twice",
                     "put the cache on the Linux filesystem: set cache.hub_dir (or HF_HUB_CACHE) "
                     "to e.g. ~/.cache/huggingface/hub inside WSL and move the models there")
    return Check(name, OK, f"WSL: the cache {real} is on the Linux filesystem")


def check_hf_cache_mount(hub_dir: Path, launcher: str) -> Check:
    """What vLLM gets of the cache: containers bind-mount it, the process launcher inherits it."""
    name = "hf-cache-mount"
    if launcher != "docker":
        return Check(name, OK, f"vLLM processes get HF_HUB_CACHE={hub_dir}: the same cache")
    if hub_dir.is_symlink():
        real = os.path.realpath(hub_dir)
        return Check(name, WARN, f"{hub_dir} is a symlink to {real}: a container that mounts "
                                 f"{hub_dir.parent} sees a link to a path it does not have",
                     f"set cache.hub_dir (or HF_HUB_CACHE) to {real}")
    if hub_dir.name == "hub":
        return Check(name, OK, f"vLLM containers bind-mount {hub_dir.parent} as their HF_HOME: "
                               f"they read this same cache as HF_HOME/hub")
    return Check(name, OK, f"vLLM containers bind-mount {hub_dir} as their hub cache "
                           f"(it is not the hub of an HF_HOME): they read this same cache")


def check_downloads(hub_dir: Path, catalog_repos: Sequence[str], model: str = "") -> Check:
    """Interrupted downloads (``*.incomplete`` blobs) and catalog models with missing files.

    An incomplete snapshot of ``model`` (the one being diagnosed) fails its loads: FAIL."""
    name = "downloads"
    if not hub_dir.is_dir():
        return Check(name, SKIPPED, f"no cache at {hub_dir}")
    partial = _incomplete_blobs(hub_dir)
    broken = {}
    for repo in catalog_repos:
        snapshot = find_snapshot(hub_dir, repo)
        if snapshot is not None and not snapshot.complete:
            broken[repo] = snapshot.missing
    if not partial and not broken:
        return Check(name, OK, "no interrupted downloads, no incomplete snapshots")
    parts = [f"{repo} (partial download, {size(held)})" for repo, held in partial.items()]
    parts += [f"{repo} (missing {', '.join(missing)})" for repo, missing in broken.items()]
    repos = sorted({*partial, *broken})
    status = FAIL if model in broken else WARN
    return Check(name, status, f"incomplete: {'; '.join(parts)}",
                 f"resume: ocrctl pull {repos[0]} (or hf download REPO); or delete: "
                 f"ocrctl cache rm {repos[0]}")


def _incomplete_blobs(hub_dir: Path) -> dict[str, int]:
    """{repo id: bytes} of the ``blobs/*.incomplete`` files huggingface_hub leaves mid-download."""
    found: dict[str, int] = {}
    for blob in sorted(hub_dir.glob("models--*/blobs/*.incomplete")):
        repo = blob.parent.parent.name.removeprefix("models--").replace("--", "/", 1)
        try:
            found[repo] = found.get(repo, 0) + blob.stat().st_size
        except OSError:
            continue
    return found


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")
