"""The shared Hugging Face cache, as ocrd sees it: where it is, and what a model has in it.

One cache for every engine: runners load from it by repo id and containers mount it, so nothing
is downloaded twice. The location follows the Hugging Face variables (``HF_HUB_CACHE``, the
deprecated ``TRANSFORMERS_CACHE``, ``HF_HOME``) unless ``cache.hub_dir`` is configured. Reading
goes through huggingface_hub (its cache layout, refs and revisions), never by guessing paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ocrd.model_ids import check_revision

log = logging.getLogger("ocrd.cache.inventory")


def resolve_hub_dir(configured: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """The hub cache directory: config > $HF_HUB_CACHE > $TRANSFORMERS_CACHE > $HF_HOME/hub."""
    env = os.environ if environ is None else environ
    if configured is not None:
        return Path(configured).expanduser()
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("TRANSFORMERS_CACHE"):
        log.warning("TRANSFORMERS_CACHE is deprecated; set HF_HUB_CACHE (or HF_HOME) instead")
        return Path(env["TRANSFORMERS_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class Snapshot:
    """One revision of a model in the cache."""

    repo_id: str
    commit: str
    path: Path
    # Files the snapshot needs but does not have (shards listed in an index, broken links).
    missing: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return not self.missing

    def config(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def find_snapshot(hub_dir: Path, repo_id: str, revision: str | None = None) -> Snapshot | None:
    """The cached snapshot of ``repo_id`` at ``revision`` (default: main), or None if absent."""
    from huggingface_hub import try_to_load_from_cache  # ~30 ms (yaml): on first use, not at start

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_dir, revision=revision)
    if not isinstance(found, str):
        return None
    path = Path(found).parent
    return Snapshot(repo_id=repo_id, commit=path.name, path=path, missing=_missing_files(path))


def _missing_files(snapshot: Path) -> tuple[str, ...]:
    """What a loader would fail on: dangling links, index shards absent, partial downloads."""
    missing = [entry.name for entry in snapshot.iterdir() if entry.is_symlink() and not entry.exists()]
    for index in snapshot.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError):
            missing.append(index.name)
            continue
        missing.extend(sorted(shard for shard in shards if not (snapshot / shard).exists()))
    if not any(snapshot.glob("*.safetensors")) and not any(snapshot.glob("*.bin")):
        missing.append("model weights (*.safetensors)")
    return tuple(sorted(set(missing)))


def repo_folder(hub_dir: Path, repo_id: str) -> Path:
    """``hub_dir/models--ORG--NAME``: where huggingface_hub keeps a model repo."""
    # huggingface_hub.file_download.repo_folder_name's rule with its constant: that module
    # (yaml, ~40 ms) is not imported for a path listing every model needs.
    from huggingface_hub import constants

    return Path(hub_dir) / constants.REPO_ID_SEPARATOR.join(["models", *repo_id.split("/")])


def read_ref(hub_dir: Path, repo_id: str, ref: str) -> str | None:
    """The commit a branch or tag points to in the cache, or None."""
    check_revision(ref)  # a ref is a file name under refs/: never "../"
    try:
        return (repo_folder(hub_dir, repo_id) / "refs" / ref).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def point_ref(hub_dir: Path, repo_id: str, ref: str, commit: str) -> None:
    """Points a branch or tag of the cache at ``commit``, atomically (temp file, rename).

    huggingface_hub moves the ref when a download starts; ocrd downloads by commit and moves it
    here once every file is in, so that a name never resolves to a half-downloaded snapshot."""
    check_revision(ref)  # a ref is a file name under refs/: never "../"
    path = repo_folder(hub_dir, repo_id) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temp.write_text(commit, encoding="utf-8")
    os.replace(temp, path)


def discard_download(hub_dir: Path, repo_id: str, commit: str, *, repo_was_cached: bool) -> None:
    """Removes what a failed download of ``commit`` left (its snapshot and unshared blobs), so
    nothing half-done stays in the cache; a repo the download created goes entirely."""
    folder = repo_folder(hub_dir, repo_id)
    if not repo_was_cached:
        # Nothing else was in it: even a folder scan_cache_dir cannot read goes.
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        delete_cached(hub_dir, repo_id, commit)
    except LookupError:
        pass  # no file of that commit was written


def cached_model_repos(hub_dir: Path) -> list[str]:
    """Repo ids of every model in the cache (huggingface_hub's scan; empty if no cache yet)."""
    info = scan_cache(hub_dir)
    if info is None:
        return []
    return sorted(repo.repo_id for repo in info.repos if repo.repo_type == "model")


# --- inventory and deletion (huggingface_hub's scan and delete strategy) -------------------------


@dataclass(frozen=True)
class CachedRevision:
    commit: str
    refs: tuple[str, ...]
    size_bytes: int
    last_modified: float  # epoch seconds


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    repo_type: str
    size_bytes: int
    revisions: tuple[CachedRevision, ...]
    last_accessed: float
    last_modified: float


@dataclass(frozen=True)
class CacheDeletion:
    """What a deletion frees (or would free, for a dry run)."""

    repo_id: str
    freed_bytes: int
    deleted_paths: tuple[str, ...]
    dry_run: bool


def scan_repos(hub_dir: Path) -> list[CachedRepo]:
    """Every repository in the cache with its revisions (empty if there is no cache yet)."""
    info = scan_cache(hub_dir)
    if info is None:
        return []
    repos = []
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        revisions = tuple(
            CachedRevision(
                commit=rev.commit_hash, refs=tuple(sorted(rev.refs)), size_bytes=rev.size_on_disk,
                last_modified=rev.last_modified,
            )
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        )
        repos.append(CachedRepo(
            repo_id=repo.repo_id, repo_type=repo.repo_type, size_bytes=repo.size_on_disk,
            revisions=revisions, last_accessed=repo.last_accessed, last_modified=repo.last_modified,
        ))
    return repos


def delete_cached(
    hub_dir: Path, repo_id: str, revision: str | None = None, *, dry_run: bool = False
) -> CacheDeletion:
    """Deletes a model repo (every revision, or one commit or ref) with huggingface_hub's strategy.

    LookupError when the repo or the revision is not in the cache."""
    info = scan_cache(hub_dir)
    if info is None:
        raise LookupError(f"there is no Hugging Face cache at {hub_dir}")
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    if repo is None:
        raise LookupError(f"{repo_id} is not in the Hugging Face cache at {hub_dir}")
    if revision:
        commits = [rev.commit_hash for rev in repo.revisions
                   if rev.commit_hash == revision or revision in rev.refs]
        if not commits:
            known = ", ".join(sorted(rev.commit_hash for rev in repo.revisions))
            raise LookupError(f"{repo_id} has no cached revision {revision!r}; cached: {known}")
    else:
        commits = [rev.commit_hash for rev in repo.revisions]
    # Scoped to this repo: delete_revisions looks commits up across the whole cache, and two repos
    # may hold the same commit hash (identical content), so it could pick the other one.
    strategy = replace(info, repos=frozenset({repo})).delete_revisions(*commits)
    paths = sorted(str(p) for p in (*strategy.repos, *strategy.snapshots, *strategy.refs, *strategy.blobs))
    freed = strategy.expected_freed_size
    if not dry_run:
        strategy.execute()
    return CacheDeletion(repo_id, freed, tuple(paths), dry_run)


def scan_cache(hub_dir: Path) -> Any:
    """huggingface_hub's scan of the cache; None when there is no cache folder yet. Imported on
    first use, as in find_snapshot (huggingface_hub.errors brings its HTTP client, ~30 ms)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(hub_dir)
    except CacheNotFound:
        return None
