"""Cleanup (``ocrctl cleanup``): unload idle models, end orphaned runners, remove stale runner
sockets and orphaned containers, and say how much memory that freed.

Plan, then act. The plan is made of four parts:

* loaded models that are idle (ready, no request in flight, none queued) and not pinned: the
  scheduler unloads them, as ``ocrctl unload`` would;
* orphaned runner processes (``ocrd.runners.orphans``): runners whose daemon is gone, and runners that
  name this daemon but are none of its scheduler's. Runners of another live ocrd on the same host
  are never touched (the test suite runs several daemons at once, and so may a host);
* sockets in the daemon's ``runners/`` that no live process is bound to (``ocrd.runners.sockets``):
  runners killed with no daemon watching leave them. Looked at after the orphans are ended, whose
  sockets may be among them;
* containers labelled ``ocrd.managed=1`` (and, given an ``instance``, this daemon's
  ``ocrd.instance``) that no live runner owns (``owned_containers``, by id: ``for_daemon`` takes
  them from the scheduler's runners, loading ones included). A container of a model that is
  loading or unloading is spared as well: its runner may be creating or removing it right now.
  Without Docker (no engine, no SDK) an action line says that containers were not checked, and why.

Memory freed is what was measured before acting: the runner's own measure for an unloaded model,
and for an orphan its resident memory plus the GPU memory NVML shows for its pid. A dry run does
nothing and reports the same models, pids, containers, bytes and lines ("would ...").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrd.config.settings import vllm_instance
from ocrd.core.scheduler import Scheduler, SlotInfo
from ocrd.errors import OcrdError
from ocrd.events import ModelState
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.orphans import RunnerProcess, end_runner, runner_processes
from ocrd.runners.sockets import remove_socket, stale_sockets
from ocrd.runners.vllm.docker_host import MODEL_LABEL, docker_client, managed_containers

END_GRACE = 5.0  # seconds an orphaned runner or container gets between SIGTERM and SIGKILL
BUSY_STATES = (ModelState.LOADING, ModelState.UNLOADING)


@dataclass(frozen=True)
class CleanupReport:
    dry_run: bool
    unloaded_models: tuple[str, ...]
    ended_pids: tuple[int, ...]
    removed_containers: tuple[str, ...]
    removed_sockets: tuple[str, ...]  # paths of stale runner sockets
    freed_bytes: int
    actions: tuple[str, ...]  # one plain line each, in the order they happened


@dataclass
class _Tally:
    models: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    freed: int = 0
    actions: list[str] = field(default_factory=list)


class Cleanup:
    def __init__(
        self,
        scheduler: Scheduler,
        gpu: GpuProbe,
        *,
        daemon_pid: int,
        owned_containers: frozenset[str],
        instance: str | None = None,
        grace: float = END_GRACE,
        proc_root: Path = Path("/proc"),
        runner_dir: Path | None = None,
    ):
        self._scheduler = scheduler
        self._gpu = gpu
        self._daemon_pid = daemon_pid
        self._owned = owned_containers  # ids of the containers this daemon's runners use
        self._instance = instance  # this daemon's ocrd.instance label; None: every instance's
        self._grace = grace
        self._proc = proc_root
        self._runner_dir = runner_dir  # the daemon's runners/; None: no sockets are looked at

    @classmethod
    def for_daemon(cls, scheduler: Scheduler, gpu: GpuProbe, daemon_pid: int,
                   runner_dir: Path | None = None) -> Cleanup:
        """The cleanup of the daemon that runs ``scheduler``: its runners' containers are owned,
        and only its own instance's containers are looked at."""
        return cls(scheduler, gpu, daemon_pid=daemon_pid,
                   owned_containers=owned_containers(scheduler),
                   instance=vllm_instance(scheduler.settings), runner_dir=runner_dir)

    async def run(self, *, dry_run: bool) -> CleanupReport:
        tally = _Tally()
        await self._unload_idle(tally, dry_run)
        await self._end_orphans(tally, dry_run)
        await self._remove_stale_sockets(tally, dry_run)
        await self._remove_containers(tally, dry_run)
        if not tally.actions:
            tally.actions.append("nothing to clean up")
        return CleanupReport(
            dry_run=dry_run, unloaded_models=tuple(tally.models), ended_pids=tuple(tally.pids),
            removed_containers=tuple(tally.containers), removed_sockets=tuple(tally.sockets),
            freed_bytes=tally.freed, actions=tuple(tally.actions),
        )

    # --- idle models ------------------------------------------------------------------------

    async def _unload_idle(self, tally: _Tally, dry_run: bool) -> None:
        for slot in self._scheduler.models():
            if slot.state in (ModelState.NOT_LOADED, ModelState.FAILED):
                continue
            kept = why_kept(slot)
            if kept:
                tally.actions.append(f"kept {slot.id}: {kept}")
            elif dry_run:
                tally.models.append(slot.id)
                tally.freed += slot.memory_bytes
                tally.actions.append(f"would unload {slot.id} (idle; {_size(slot.memory_bytes)})")
            else:
                await self._unload(slot.id, tally)

    async def _unload(self, model: str, tally: _Tally) -> None:
        # Earlier unloads awaited: a request may have arrived for this model meanwhile.
        kept = why_kept(self._scheduler.info(model))
        if kept:
            tally.actions.append(f"kept {model}: {kept}")
            return
        try:
            result = await self._scheduler.unload(model)
        except OcrdError as exc:
            tally.actions.append(f"could not unload {model}: {exc.message}")
            return
        if result.was_loaded:
            tally.models.append(model)
            tally.freed += result.freed_bytes
            tally.actions.append(f"unloaded {model} (idle; freed {_size(result.freed_bytes)})")

    # --- orphaned runner processes ----------------------------------------------------------

    async def _end_orphans(self, tally: _Tally, dry_run: bool) -> None:
        found = await asyncio.to_thread(runner_processes, self._proc)
        # Judged against the scheduler as it is now, after the scan: a runner that started
        # during the scan belongs to a model that is loading (or ready) by now.
        orphans = self._orphans(found)
        if not orphans:
            return
        gpu_memory = await asyncio.to_thread(self._gpu_memory_by_pid)
        for process, reason in orphans:
            memory = process.rss_bytes + gpu_memory.get(process.pid, 0)
            what = f"runner pid {process.pid} ({process.model or 'unknown model'})"
            if dry_run:
                done = "would end"
            else:
                outcome = await asyncio.to_thread(end_runner, process, self._grace, self._proc)
                if outcome == "already gone":
                    tally.actions.append(f"{what} had already ended")
                    continue
                if outcome == "still running":
                    tally.actions.append(f"could not end {what}: it survived SIGKILL")
                    continue
                done = "ended" if outcome == "terminated" else "killed (it ignored SIGTERM)"
            tally.pids.append(process.pid)
            tally.freed += memory
            tally.actions.append(f"{done} {what}: {reason}; {_size(memory)}")

    def _orphans(self, found: list[RunnerProcess]) -> list[tuple[RunnerProcess, str]]:
        slots = self._scheduler.models()
        known = {slot.pid for slot in slots if slot.pid}
        # A loading runner is not the slot's yet (its pid shows once ready): spare its model's.
        busy = {slot.id for slot in slots if slot.state in BUSY_STATES}
        orphans = []
        for process in found:
            reason = orphan_reason(process, self._daemon_pid, known, busy)
            if reason:
                orphans.append((process, reason))
        return orphans

    def _gpu_memory_by_pid(self) -> dict[int, int]:
        snapshot = self._gpu.snapshot()
        memory: dict[int, int] = {}
        for device in snapshot.devices:
            for process in device.processes:
                memory[process.pid] = memory.get(process.pid, 0) + process.used_bytes
        return memory

    # --- stale runner sockets ---------------------------------------------------------------

    async def _remove_stale_sockets(self, tally: _Tally, dry_run: bool) -> None:
        if self._runner_dir is None:
            return
        for path in await asyncio.to_thread(stale_sockets, self._runner_dir):
            what = f"stale runner socket {path}"
            if not dry_run:
                try:
                    if not await asyncio.to_thread(remove_socket, path):
                        continue  # gone meanwhile: nothing was done, nothing to say
                except OSError as exc:
                    tally.actions.append(f"could not remove {what}: {_one_line(exc)}")
                    continue
            tally.sockets.append(str(path))
            tally.actions.append(f"{'would remove' if dry_run else 'removed'} {what}: "
                                 f"no process serves on it")

    # --- orphaned containers ----------------------------------------------------------------

    async def _remove_containers(self, tally: _Tally, dry_run: bool) -> None:
        # Docker's calls block (worker threads); the scheduler is asked on the event loop.
        client = await asyncio.to_thread(docker_client)  # a client, or a one-line reason why not
        if isinstance(client, str):
            tally.actions.append(f"containers not checked: {client}")
            return
        try:
            found = await asyncio.to_thread(managed_containers, client, self._instance)
            # Judged after listing, as for runner processes: a container created meanwhile
            # belongs to a model that is loading by now.
            busy = {slot.id for slot in self._scheduler.models() if slot.state in BUSY_STATES}
            owned = self._owned | owned_containers(self._scheduler)
            for container in found:
                if container.id not in owned and container.labels.get(MODEL_LABEL) not in busy:
                    await asyncio.to_thread(self._remove_container, container, tally, dry_run)
        except Exception as exc:  # the SDK's errors and socket errors alike
            tally.actions.append(f"containers not checked: Docker did not answer: {_one_line(exc)}")
        finally:
            client.close()

    def _remove_container(self, container: Any, tally: _Tally, dry_run: bool) -> None:
        model = container.labels.get(MODEL_LABEL) or "unknown model"
        what = f"container {container.name} ({container.short_id}, {model}, {container.status})"
        if not dry_run:
            try:
                if container.status == "running":
                    container.stop(timeout=max(1, round(self._grace)))
                container.remove(force=True)
            except Exception as exc:
                tally.actions.append(f"could not remove {what}: {_one_line(exc)}")
                return
        tally.containers.append(container.id)
        tally.actions.append(f"{'would remove' if dry_run else 'removed'} {what}: no runner owns it")


def owned_containers(scheduler: Scheduler) -> frozenset[str]:
    """Ids of the containers the scheduler's live runners use (container runners have one)."""
    ids = (getattr(runner, "container_id", None) for runner in scheduler.live_runners())
    return frozenset(filter(None, ids))


def why_kept(slot: SlotInfo) -> str:
    """Why cleanup leaves a loaded model alone; empty when it is idle and may be unloaded."""
    if slot.state is not ModelState.READY:
        return slot.state.value
    if slot.pinned:
        return "pinned"
    busy = []
    if slot.in_flight:
        busy.append(f"{slot.in_flight} request(s) in flight")
    if slot.queued:
        busy.append(f"{slot.queued} queued")
    return ", ".join(busy)


def orphan_reason(
    process: RunnerProcess, daemon_pid: int, known_pids: set[int], busy_models: set[str]
) -> str:
    """Why ``process`` is an orphan of ``daemon_pid``'s view; empty when it is not one."""
    if process.pid in known_pids:
        return ""
    if process.daemon_gone:
        return f"its ocrd (pid {process.claimed_parent}) is gone"
    if process.claimed_parent != daemon_pid:
        return ""  # the runner of another ocrd that is alive
    if process.model in busy_models:
        return ""
    return "started by this ocrd but none of its models' runner"


def _size(num_bytes: int) -> str:
    if num_bytes <= 0:
        return "memory unknown"
    mib = num_bytes / 2**20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
