"""``ocrctl cache verify``: does a cached model hold what a loader will read?

For each cached revision of a repo: every file of the snapshot resolves to a blob; each
safetensors blob is exactly as long as its header says (8 bytes + the header + the end of the
last tensor); every shard a ``*.safetensors.index.json`` names is there; ``config.json`` parses;
the files the Hub listed for the commit (huggingface_hub keeps that listing after
``snapshot_download``) were downloaded; and no partial download (``*.incomplete``) lies among
the repo's blobs. Only safetensors headers are read, so a model of many GB is checked at once.

The repo, its revisions and files come from ``huggingface_hub.scan_cache_dir``. One broken link
makes scan_cache_dir reject the whole repo (``CorruptedCacheException``, no file named); then,
and only then, the repo's snapshots are listed here directly, to say which file is broken.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ocrd.cache.inventory import repo_folder, scan_cache

# Files the Hub lists that no loader reads: a snapshot without them is whole.
_NOT_NEEDED_SUFFIXES = (".md", ".gitattributes", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf")
# Other formats of the same weights: not needed when the safetensors are there (transformers and
# vLLM read only those, and vLLM downloads only those).
_OTHER_WEIGHT_SUFFIXES = (
    ".bin", ".bin.index.json", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".onnx_data", ".gguf",
    ".ckpt", ".ot", ".tflite", ".mlmodel", ".npz",
)
_PARTIAL_HINT = "partial download (interrupted, or still running); `ocrctl pull` fetches the file again"


@dataclass(frozen=True)
class FileProblem:
    file: str  # path inside the snapshot, or blobs/<name> for a partial download
    problem: str  # plain words: what is wrong


@dataclass(frozen=True)
class RevisionCheck:
    commit: str
    refs: tuple[str, ...]
    files_checked: int
    problems: tuple[FileProblem, ...]


@dataclass(frozen=True)
class CacheVerification:
    repo_id: str
    revisions: tuple[RevisionCheck, ...]

    @property
    def ok(self) -> bool:
        return not any(revision.problems for revision in self.revisions)


@dataclass(frozen=True)
class _SnapshotFile:
    name: str  # relative to the snapshot, with "/"
    blob: Path  # where its link points (the file itself when it is no link)


@dataclass(frozen=True)
class _Revision:
    commit: str
    refs: tuple[str, ...]
    files: tuple[_SnapshotFile, ...]
    has_folder: bool = True


def verify_cached(hub_dir: Path, repo_id: str, revision: str | None = None) -> CacheVerification:
    """Checks every cached revision of ``repo_id`` (or the one ``revision`` names: commit or ref).

    LookupError when the repo or the revision is not in the cache."""
    revisions = _cached_revisions(hub_dir, repo_id)
    if revision:
        chosen = [rev for rev in revisions if rev.commit == revision or revision in rev.refs]
        if not chosen:
            known = ", ".join(sorted(rev.commit for rev in revisions)) or "none"
            raise LookupError(f"{repo_id} has no cached revision {revision!r}; cached: {known}")
    else:
        chosen = revisions
    partials = _partial_downloads(repo_folder(hub_dir, repo_id))
    return CacheVerification(repo_id, tuple(_check(hub_dir, repo_id, rev, partials) for rev in chosen))


# --- what is cached -------------------------------------------------------------------------------


def _cached_revisions(hub_dir: Path, repo_id: str) -> list[_Revision]:
    info = scan_cache(hub_dir)
    if info is None:
        raise LookupError(f"there is no Hugging Face cache at {hub_dir}")
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None)
    if repo is not None:
        return [
            _Revision(
                commit=rev.commit_hash,
                refs=tuple(sorted(rev.refs)),
                files=tuple(sorted(
                    (_SnapshotFile(f.file_path.relative_to(rev.snapshot_path).as_posix(), f.blob_path)
                     for f in rev.files),
                    key=lambda f: f.name,
                )),
            )
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        ]
    folder = repo_folder(hub_dir, repo_id)
    if not folder.is_dir():
        raise LookupError(f"{repo_id} is not in the Hugging Face cache at {hub_dir}")
    return _list_revisions(folder)  # scan_cache_dir found it corrupted: say where


def _list_revisions(folder: Path) -> list[_Revision]:
    """The revisions of a repo that scan_cache_dir rejects, read from its folders directly."""
    refs: dict[str, list[str]] = {}
    refs_dir = folder / "refs"
    for ref in sorted(refs_dir.rglob("*")) if refs_dir.is_dir() else ():
        if ref.is_file():
            refs.setdefault(ref.read_text(encoding="utf-8").strip(), []).append(
                ref.relative_to(refs_dir).as_posix())
    revisions = []
    snapshots = folder / "snapshots"
    for snapshot in sorted(snapshots.iterdir()) if snapshots.is_dir() else ():
        if not snapshot.is_dir():
            continue
        files = tuple(
            _SnapshotFile(path.relative_to(snapshot).as_posix(), _link_target(path))
            for path in sorted(snapshot.rglob("*")) if path.is_symlink() or path.is_file()
        )
        revisions.append(_Revision(snapshot.name, tuple(refs.pop(snapshot.name, ())), files))
    # Refs to a commit without a snapshot folder: a download that stopped before its first file.
    revisions += [_Revision(commit, tuple(names), (), has_folder=False) for commit, names in refs.items()]
    return revisions


def _link_target(path: Path) -> Path:
    if not path.is_symlink():
        return path
    return Path(os.path.normpath(path.parent / os.readlink(path)))


def _partial_downloads(folder: Path) -> list[str]:
    """Names of the ``*.incomplete`` files among the blobs (scan_cache_dir does not list them)."""
    try:
        return sorted(entry.name for entry in os.scandir(folder / "blobs") if entry.name.endswith(".incomplete"))
    except OSError:
        return []


# --- the checks -----------------------------------------------------------------------------------


def _check(hub_dir: Path, repo_id: str, rev: _Revision, partials: list[str]) -> RevisionCheck:
    problems: dict[str, str] = {}  # the first problem found per file

    def report(found: Iterable[tuple[str, str]]) -> None:
        for file, problem in found:
            problems.setdefault(file, problem)

    if not rev.has_folder:
        refs = ", ".join(f"refs/{ref}" for ref in rev.refs)
        report([(f"snapshots/{rev.commit}",
                 f"missing: {refs} points to this commit but none of its files was downloaded")])
    present = [f for f in rev.files if f.blob.exists()]
    report((f.name, f"missing: its link points to blobs/{f.blob.name}, which is not in the cache")
           for f in rev.files if not f.blob.exists())
    report((f.name, problem) for f in present if f.name.endswith(".safetensors")
           for problem in [_safetensors_problem(f.blob)] if problem)
    names = {f.name for f in rev.files}
    report(_index_problems([f for f in present if f.name.endswith(".safetensors.index.json")], names))
    if rev.has_folder:
        report(_config_problems(rev.files))
        report(_weights_problems(names))
        report(_unlisted_files(hub_dir, repo_id, rev.commit, names))
    report((f"blobs/{name}", _PARTIAL_HINT) for name in partials)
    return RevisionCheck(
        commit=rev.commit, refs=rev.refs, files_checked=len(rev.files),
        problems=tuple(FileProblem(file, problem) for file, problem in problems.items()),
    )


def _safetensors_problem(blob: Path) -> str | None:
    """Whether the blob is as long as its header says: a short one is a cut-off download."""
    # huggingface_hub's errors and hf_api are imported here, on first use: ~0.13 s of the
    # daemon's start-up otherwise (this module is on its way to READY).
    from huggingface_hub.errors import SafetensorsParsingError

    try:
        size = blob.stat().st_size
        with blob.open("rb") as stream:
            prefix = stream.read(8)
        if len(prefix) < 8:
            return f"truncated: {size} bytes, not even the 8-byte safetensors header length"
        header_end = 8 + int.from_bytes(prefix, "little")
        if header_end > size:
            return f"truncated: {size:,} bytes, shorter than its own header ({header_end:,} bytes)"
        from huggingface_hub import parse_local_safetensors_file_metadata

        metadata = parse_local_safetensors_file_metadata(blob)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except SafetensorsParsingError:
        return "not a safetensors file: its header does not parse"
    expected = header_end + max((t.data_offsets[1] for t in metadata.tensors.values()), default=0)
    if size < expected:
        return f"truncated: {size:,} of the {expected:,} bytes its header describes (a cut-off download?)"
    if size > expected:
        return f"{size - expected:,} bytes longer than the {expected:,} bytes its header describes"
    return None


def _index_problems(indexes: list[_SnapshotFile], names: set[str]) -> Iterable[tuple[str, str]]:
    for index in indexes:
        try:
            shards = set(json.loads(index.blob.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            yield index.name, "not a valid index: no readable weight_map"
            continue
        folder = index.name.rpartition("/")[0]
        for shard in sorted(shards):
            path = f"{folder}/{shard}" if folder else shard
            if path not in names:
                yield path, f"missing: {index.name} lists this shard"


def _config_problems(files: tuple[_SnapshotFile, ...]) -> Iterable[tuple[str, str]]:
    config = next((f for f in files if f.name == "config.json"), None)
    if config is None:
        yield "config.json", "missing: every loader reads it"
        return
    if not config.blob.exists():
        return  # reported as a broken link
    try:
        json.loads(config.blob.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        yield "config.json", f"not valid JSON ({exc})"


def _weights_problems(names: set[str]) -> Iterable[tuple[str, str]]:
    if not any(name.endswith((".safetensors", ".bin", ".safetensors.index.json")) for name in names):
        yield "model weights", "missing: no *.safetensors (or *.bin) file"


def _unlisted_files(hub_dir: Path, repo_id: str, commit: str, names: set[str]) -> Iterable[tuple[str, str]]:
    """Files the Hub listed for this commit (kept by snapshot_download) that are not here."""
    from huggingface_hub import get_cached_repo_tree  # see _safetensors_problem: on first use
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        listed = get_cached_repo_tree(repo_id, revision=commit, cache_dir=hub_dir)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return  # downloaded file by file (or by an older huggingface_hub): no listing to compare
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    for entry in sorted(listed, key=lambda e: e.path):
        if entry.path not in names and _needed(entry.path, has_safetensors):
            yield entry.path, "missing: the Hub lists it for this commit, but it was not downloaded"


def _needed(path: str, has_safetensors: bool) -> bool:
    name = path.rpartition("/")[2]
    if name.endswith(_NOT_NEEDED_SUFFIXES) or name.upper().startswith("LICENSE"):
        return False
    return not (has_safetensors and name.endswith(_OTHER_WEIGHT_SUFFIXES))
