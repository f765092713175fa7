"""Downloads into the shared Hugging Face cache (``ocrctl pull``), one per repository at a time.

The work is ``huggingface_hub.snapshot_download`` in a thread of its own (it blocks). The event
loop follows it by looking at the cache every ``POLL_INTERVAL`` seconds: a file is done once its
link is in the snapshot, and in progress while its blob's ``*.incomplete`` file grows. Every
client of a download sees the same progress, and a second pull of a repository being downloaded
joins that download (same revision) or waits for it to end (another revision) instead of racing
it.

1. Resolve: ``HfApi.model_info(files_metadata=True)`` gives the commit and every file with its
   size and blob name. The download then asks for that commit, so a branch that moves meanwhile
   cannot mix two commits.
2. Download: snapshot_download of the commit into ``hub_dir``. The ref (``main``, a tag) moves
   to the commit only once every file is in (``hf_cache.point_ref``); until then the name
   resolves to what it resolved to before.
3. A failure removes what the download wrote for a commit that was not cached before
   (``hf_cache.discard_download``): nothing half-done stays behind to look complete.

Stopping: a thread cannot be killed, but huggingface_hub reports each chunk it writes to the
progress-bar class it is given, and ours raises ``DownloadStopped`` once the download is to stop.
The download then ends at its next chunk (10 MB), or when the file being read is complete. A
download stops when the last client following it goes away (Ctrl-C on ``ocrctl pull``, as with
``docker pull``) and when ocrd stops (``asyncio.run`` cancels the task that supervises it).

The endpoint is ``$HF_ENDPOINT`` of ocrd's environment (default https://huggingface.co), read
at each pull; ``HF_TOKEN`` is read by huggingface_hub at each request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from huggingface_hub import constants

from ocrd.cache.hub_errors import Download, DownloadStopped, hub_error, offline_error
from ocrd.cache.inventory import discard_download, find_snapshot, point_ref, repo_folder
from ocrd.errors import HubUnavailable, OcrdError
from ocrd.events import Event, EventBus

log = logging.getLogger("ocrd.cache.pull")

POLL_INTERVAL = 0.25  # seconds between two looks at the cache while a download runs
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path in the repo
    size: int
    blob: str  # its name under blobs/: the LFS sha256, else the git blob id (what the ETag says)


@dataclass(frozen=True)
class PullPlan:
    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    cached: frozenset[str] = frozenset()  # files of the commit in the cache before the download

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class PullStep:
    """One progress report: of one file when ``file`` is set, else of the whole download."""

    repo_id: str
    commit: str = ""
    file: str = ""
    downloaded_bytes: int = 0
    total_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    done: bool = False
    message: str = ""


def hub_endpoint(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return constants.is_offline_mode() or env.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


class Puller:
    """The downloads of a daemon, one per (cache, repository). The daemon builds one and hands
    it to the control plane (download threads belong to the daemon, not to a request or a
    servicer); tests build their own."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], _Job] = {}

    def active(self) -> list[str]:
        """Repo ids being downloaded (or stopping) now."""
        return sorted(repo_id for _, repo_id in self._jobs)

    async def pull(
        self, hub_dir: Path, repo_id: str, revision: str, *, endpoint: str | None = None,
        events: EventBus | None = None, environ: dict[str, str] | None = None,
    ) -> AsyncIterator[PullStep]:
        """Downloads ``repo_id`` at ``revision`` (or joins its download); yields progress, the
        last step with ``done``. Raises an OcrdError saying what to do when it fails."""
        download = Download(repo_id, revision, endpoint or hub_endpoint(environ), Path(hub_dir))
        if hub_offline(environ):
            raise offline_error(download)
        job = await self._job_for(download, events)
        job.watchers += 1
        try:
            async for step in _follow(job):
                yield step
        finally:
            job.watchers -= 1
            if job.watchers == 0 and not job.finished.done():
                job.abandon()

    async def _job_for(self, download: Download, events: EventBus | None) -> _Job:
        key = (str(download.hub_dir), download.repo_id)
        while (job := self._jobs.get(key)) is not None:
            if job.finished.done():
                self._forget(key, job)  # it has ended; its supervisor has not run yet
            elif job.download.revision == download.revision and not job.stop.is_set():
                return job
            else:
                await asyncio.wait({job.finished})  # one download per repository: it ends first
        job = _Job(download, events)
        self._jobs[key] = job
        job.start(on_end=lambda: self._forget(key, job))
        return job

    def _forget(self, key: tuple[str, str], job: _Job) -> None:
        if self._jobs.get(key) is job:
            del self._jobs[key]


# --- one download ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    download: Download
    events: EventBus | None
    plan: PullPlan | None = None  # set by the download thread once the commit is known
    stop: threading.Event = field(default_factory=threading.Event)
    watchers: int = 0
    finished: asyncio.Future[Path] = field(init=False)
    _supervisor: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    def start(self, on_end: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        # Not a daemon thread: when ocrd exits, the download is stopped (see above) and this
        # thread must still remove what it left before the interpreter goes.
        threading.Thread(target=self._run, args=(loop,),
                         name=f"ocrd-pull {self.download.repo_id}").start()
        self._supervisor = loop.create_task(self._supervise(on_end))
        self._publish("cache.pull_started", f"downloading {self.download.repo_id}@{self.download.revision}")

    def abandon(self) -> None:
        """Nobody follows the download any more: stop it."""
        self._stop(f"no client follows it any more: stopping the download of {self.download.repo_id}")

    def _stop(self, why: str) -> None:
        self.stop.set()
        log.info("%s", why)
        self._publish("cache.pull_stopping", why)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        outcome: Path | BaseException
        try:
            outcome = _download(self)
            log.info("downloaded %s@%s into %s", self.download.repo_id, self.download.revision, outcome)
        except BaseException as exc:
            outcome = hub_error(exc, self.download)
            if not isinstance(outcome, OcrdError):
                log.error("downloading %s failed", self.download.repo_id, exc_info=exc)
        try:
            loop.call_soon_threadsafe(self._settle, outcome)
        except RuntimeError:
            pass  # the event loop is closed: ocrd has stopped

    def _settle(self, outcome: Path | BaseException) -> None:
        """The download's snapshot folder, or why there is none."""
        if self.finished.done():
            return
        if isinstance(outcome, BaseException):
            self.finished.set_exception(outcome)
        else:
            self.finished.set_result(outcome)

    async def _supervise(self, on_end: Callable[[], None]) -> None:
        try:
            await asyncio.wait({self.finished})
        except asyncio.CancelledError:  # ocrd is stopping: asyncio.run cancels what is left
            self._stop(f"ocrd is stopping: stopping the download of {self.download.repo_id}")
            raise
        finally:
            on_end()
        error = self.finished.exception()
        if error is None:
            self._publish("cache.pulled", f"{self.download.repo_id}@{self.download.revision} is in "
                          f"the cache at {self.finished.result()}")
        else:
            self._publish("cache.pull_failed", getattr(error, "message", None) or str(error))

    def _publish(self, kind: str, message: str) -> None:
        if self.events is not None:
            self.events.publish(Event(kind=kind, model=self.download.repo_id, message=message))


def _download(job: _Job) -> Path:
    """The blocking part, in the job's thread: resolve, download by commit, then move the ref."""
    download = job.download
    from huggingface_hub import HfApi  # when a download starts: not on the daemon's start-up path

    info = HfApi(endpoint=download.endpoint).model_info(
        download.repo_id, revision=download.revision, files_metadata=True)
    plan = _plan(info, download)
    folder = repo_folder(download.hub_dir, download.repo_id)
    repo_was_cached = folder.is_dir()
    snapshot = folder / "snapshots" / plan.commit
    snapshot_was_cached = snapshot.is_dir()
    job.plan = plan = replace(plan, cached=frozenset(f.name for f in plan.files if (snapshot / f.name).exists()))
    if job.stop.is_set():
        raise DownloadStopped()
    try:
        from huggingface_hub import ResolvedRevision, snapshot_download

        path = snapshot_download(
            download.repo_id,
            # Already resolved: snapshot_download asks for this commit and leaves refs alone.
            revision=ResolvedRevision(plan.commit, initial=download.revision, repo_id=download.repo_id),
            cache_dir=download.hub_dir, endpoint=download.endpoint, tqdm_class=_stoppable_bar(job.stop),
        )
    except BaseException:
        if not snapshot_was_cached:
            discard_download(download.hub_dir, download.repo_id, plan.commit, repo_was_cached=repo_was_cached)
        raise
    if download.revision != plan.commit:
        point_ref(download.hub_dir, download.repo_id, download.revision, plan.commit)
    return Path(path)


def _plan(info: Any, download: Download) -> PullPlan:
    if not info.sha:
        raise HubUnavailable(f"{download.endpoint} named no commit for {download.repo_id}@{download.revision}; "
                             "is HF_ENDPOINT a Hugging Face Hub?")
    files = tuple(
        RemoteFile(
            name=sibling.rfilename,
            size=sibling.size or (sibling.lfs.size if sibling.lfs else 0),
            blob=sibling.lfs.sha256 if sibling.lfs else (sibling.blob_id or ""),
        )
        for sibling in info.siblings or ()
    )
    return PullPlan(download.repo_id, download.revision, info.sha, files)


def _stoppable_bar(stop: threading.Event) -> type:
    """A silent progress-bar class for snapshot_download that ends the download when told to."""

    class StoppableBar:
        def __init__(self, *args: object, **kwargs: Any):
            self.n = kwargs.get("initial") or 0
            self.total = kwargs.get("total")
            self.format_dict: dict[str, Any] = {}

        def update(self, n: float | None = 1) -> None:
            # Called from the download threads for every chunk written (and per file done).
            if stop.is_set():
                raise DownloadStopped()
            self.n += n or 0

        def __enter__(self) -> Self:
            return self

        def __exit__(self, *exc_info: object) -> None:
            pass

        def close(self) -> None:
            pass

        def refresh(self, *args: object, **kwargs: object) -> None:
            pass

        def set_description(self, *args: object, **kwargs: object) -> None:
            pass

        def set_description_str(self, *args: object, **kwargs: object) -> None:
            pass

        def set_postfix_str(self, *args: object, **kwargs: object) -> None:
            pass

    return StoppableBar


# --- following a download -------------------------------------------------------------------------


async def _follow(job: _Job) -> AsyncIterator[PullStep]:
    report = _Report()
    while True:
        await asyncio.wait({job.finished}, timeout=POLL_INTERVAL)
        plan = job.plan
        if plan is not None:
            state = await asyncio.to_thread(_look, job.download.hub_dir, plan)
            for step in report.steps(plan, *state):
                yield step
        if job.finished.done():
            break
    path = job.finished.result()  # raises the download's error
    assert plan is not None  # a download that succeeded was resolved
    missing = await asyncio.to_thread(_missing, job.download.hub_dir, plan)
    yield report.final(plan, path, missing)


def _look(hub_dir: Path, plan: PullPlan) -> tuple[set[str], dict[str, int]]:
    """(files in the snapshot, bytes so far of files being downloaded), from the cache."""
    folder = repo_folder(hub_dir, plan.repo_id)
    snapshot = folder / "snapshots" / plan.commit
    done = {f.name for f in plan.files if (snapshot / f.name).exists()}
    growing: dict[str, int] = {}
    try:
        with os.scandir(folder / "blobs") as entries:
            for entry in entries:
                if entry.name.endswith(".incomplete"):
                    # <blob>.incomplete, or <blob>.<8 hex>.incomplete (huggingface_hub >= 1.x)
                    blob = entry.name.split(".", 1)[0]
                    growing[blob] = max(growing.get(blob, 0), _size(entry))
    except OSError:
        pass  # no blob yet
    partial = {f.name: growing[f.blob] for f in plan.files if f.name not in done and f.blob in growing}
    return done, partial


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_size
    except OSError:
        return 0  # renamed into place (or removed) meanwhile


def _missing(hub_dir: Path, plan: PullPlan) -> tuple[str, ...]:
    snapshot = find_snapshot(hub_dir, plan.repo_id, plan.commit)
    return snapshot.missing if snapshot is not None else ("config.json",)


@dataclass
class _Report:
    """Turns looks at the cache into steps: what changed since the last look."""

    started: bool = False
    last: dict[str, int] = field(default_factory=dict)  # bytes per file at the last look

    def steps(self, plan: PullPlan, done: set[str], partial: dict[str, int]) -> list[PullStep]:
        steps = [] if self.started else [self._start(plan)]
        self.started = True
        now = {f.name: f.size if f.name in done else partial.get(f.name, 0) for f in plan.files}
        changed = [f for f in plan.files if now[f.name] != self.last.get(f.name, 0)]
        self.last = now
        if not changed:
            return steps
        summary = PullStep(
            repo_id=plan.repo_id, commit=plan.commit, downloaded_bytes=sum(now.values()),
            total_bytes=plan.total_bytes, files_total=len(plan.files), files_done=len(done),
        )
        files = [
            replace(summary, file=f.name, downloaded_bytes=now[f.name], total_bytes=f.size)
            for f in changed
        ]
        return [*steps, *files, summary]

    def _start(self, plan: PullPlan) -> PullStep:
        """What is to be done: the commit, the files, what of it the cache already has."""
        self.last = {f.name: f.size for f in plan.files if f.name in plan.cached}
        cached = f" ({len(plan.cached)} already in the cache)" if plan.cached else ""
        return PullStep(
            repo_id=plan.repo_id, commit=plan.commit, downloaded_bytes=sum(self.last.values()),
            total_bytes=plan.total_bytes, files_total=len(plan.files), files_done=len(plan.cached),
            message=f"{plan.revision} is commit {plan.commit}: {len(plan.files)} files, "
                    f"{plan.total_bytes:,} bytes{cached}",
        )

    @staticmethod
    def final(plan: PullPlan, path: Path, missing: tuple[str, ...]) -> PullStep:
        message = f"in the cache at {path}"
        if missing:
            message += f"; ocrd cannot load it as it is (missing: {', '.join(missing)})"
        return PullStep(
            repo_id=plan.repo_id, commit=plan.commit, downloaded_bytes=plan.total_bytes,
            total_bytes=plan.total_bytes, files_total=len(plan.files), files_done=len(plan.files),
            done=True, message=message,
        )
