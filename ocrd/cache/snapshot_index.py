"""``find_snapshot`` answers kept between requests, and checked with a few ``stat`` calls.

Which snapshot of a model the cache holds, and whether it is complete, takes reading the cache:
a ref, the snapshots folder, a listing of the snapshot and its globs, an index file (~0.1 to
0.2 ms); the model directory asks it for every request, and more than once. ``SnapshotIndex``
keeps each answer with the stat (inode, mtime, ctime, size) of everything the answer was read
from: the repo folder, the ref, the snapshot folder, huggingface_hub's "does not exist" marker
for its config.json, and the blobs folder (a dangling link is mended by a blob arriving there).
Any file or link added, removed or renamed in one of them changes its folder's mtime, so a model
that another program writes into the cache (``hf download``, a copy) is seen at the next look,
and a deleted one is gone. Files inside a snapshot are not looked at again: a revision's content
never changes in the Hugging Face layout.

Two more rules keep an answer from outliving what it says:

* ``invalidate`` (a new *generation*) drops every answer; ocrd calls it whenever it changes the
  cache itself (a pull, a deletion, a load whose runner may have downloaded what was missing).
* A stat cannot see a change made within the same timestamp tick as the read (the racily clean
  entries of git's index). An answer is kept only when everything it was read from is older than
  ``SETTLED_NS``; until then it is read again at every look.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ocrd.cache.inventory import Snapshot, find_snapshot, repo_folder

# Older than this (by the stat's own timestamps against the wall clock), a folder or ref cannot
# change without its mtime or ctime changing too; file systems' timestamp ticks are far shorter.
SETTLED_NS = 2_000_000_000

Stamp = tuple[int, int, int, int] | None


def stamp(path: str) -> Stamp:
    """What a stat says of ``path`` that any change to it changes; None when it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size


@dataclass(frozen=True)
class _Answer:
    generation: int
    paths: tuple[str, ...]
    stamps: tuple[Stamp, ...]
    snapshot: Snapshot | None


class SnapshotIndex:
    """``find_snapshot`` with its answers kept (see the module doc). Safe to use from the event
    loop and worker threads at once: an answer is replaced whole."""

    def __init__(self, settled_ns: int = SETTLED_NS) -> None:
        self._settled_ns = settled_ns
        self._answers: dict[tuple[Path, str, str | None], _Answer] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.reads = 0  # how many answers were read from the cache (not kept ones)

    def invalidate(self) -> None:
        """ocrd changed the cache: every answer is read again at its next look."""
        with self._lock:
            self._generation += 1
            self._answers.clear()

    def find(self, hub_dir: Path, repo_id: str, revision: str | None = None) -> Snapshot | None:
        """``find_snapshot(hub_dir, repo_id, revision)``, from memory while nothing it was read
        from changed."""
        key = (hub_dir, repo_id, revision)
        answer = self._answers.get(key)
        if answer is not None and answer.generation == self._generation and \
                tuple(map(stamp, answer.paths)) == answer.stamps:
            return answer.snapshot
        generation = self._generation
        # Stamped before reading: a change made while reading leaves a stamp that no longer
        # matches, never an answer older than its stamps.
        paths = _sources(hub_dir, repo_id, revision)
        stamps = tuple(map(stamp, paths))
        snapshot = find_snapshot(hub_dir, repo_id, revision)
        self.reads += 1
        if _settled(stamps, self._settled_ns):
            with self._lock:
                if generation == self._generation:  # not invalidated while reading
                    self._answers[key] = _Answer(generation, paths, stamps, snapshot)
        return snapshot


def _sources(hub_dir: Path, repo_id: str, revision: str | None) -> tuple[str, ...]:
    """What ``find_snapshot`` reads (``huggingface_hub.try_to_load_from_cache``, then the
    snapshot's listing): the repo folder, the ref, the snapshot folder of the commit the ref
    names now, the no-exist marker of its config.json, the blobs folder."""
    folder = str(repo_folder(hub_dir, repo_id))
    ref = os.path.join(folder, "refs", revision or "main")
    try:
        with open(ref, encoding="utf-8") as file:
            commit = file.read()
    except OSError:  # no such ref: the revision names the snapshot folder itself
        commit = revision or "main"
    return (folder, ref, os.path.join(folder, "snapshots", commit),
            os.path.join(folder, ".no_exist", commit, "config.json"), os.path.join(folder, "blobs"))


def _settled(stamps: tuple[Stamp, ...], settled_ns: int) -> bool:
    """Whether every stamp is old enough that a later change must show in it."""
    horizon = time.time_ns() - settled_ns
    return all(s is None or (s[1] < horizon and s[2] < horizon) for s in stamps)
