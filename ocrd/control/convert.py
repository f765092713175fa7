"""Conversions between the scheduler's snapshots and the control plane's protobuf messages.

Kept apart from the servicer so that handlers stay "convert, call core, convert back" and so that
the mapping (which must stay in step with control.proto) is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from ocrd.cache.inventory import CacheDeletion
from ocrd.cache.pull import PullStep
from ocrd.cache.service import CacheInventory
from ocrd.cache.verify import CacheVerification
from ocrd.control.v1 import control_pb2 as pb
from ocrd.core.known_models import Download, KnownModel
from ocrd.core.scheduler import SlotInfo, UnloadResult
from ocrd.events import Event, ModelState
from ocrd.jobs.batches import TIMES, Batch
from ocrd.jobs.files import StoredFile
from ocrd.ops.cleanup import CleanupReport
from ocrd.ops.doctor import Check
from ocrd.planning.gpu import GpuDevice, GpuSnapshot
from ocrd.planning.planner import Decision
from ocrd.runners.base import WarmRunnerInfo
from ocrd.runners.vllm.image_pull import ImagePullStep

_TO_PB: dict[ModelState, pb.ModelState] = {
    ModelState.NOT_LOADED: pb.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.UNLOADING: pb.MODEL_STATE_UNLOADING,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
_FROM_PB: dict[int, ModelState] = {value: state for state, value in _TO_PB.items()}


def state_to_pb(state: ModelState | None) -> pb.ModelState:
    """The proto enum value; UNSPECIFIED for events that concern no model state."""
    if state is None:
        return pb.MODEL_STATE_UNSPECIFIED
    return _TO_PB[state]


def state_from_pb(value: int) -> ModelState | None:
    """The scheduler's state; None for UNSPECIFIED (and for values a newer proto may add)."""
    return _FROM_PB.get(value)


def timestamp(epoch_seconds: float | None) -> Timestamp | None:
    """A Timestamp for an epoch time; None leaves the field unset (``never``, ``not loaded``)."""
    if epoch_seconds is None:
        return None
    # Whole seconds and the fraction apart: epoch * 1e9 as a float loses the last digits.
    seconds = math.floor(epoch_seconds)
    nanos = round((epoch_seconds - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return Timestamp(seconds=seconds, nanos=nanos)


def warm_runner(warm: WarmRunnerInfo, gpu_bytes: Mapping[tuple[str, int], int]) -> pb.WarmRunner:
    """``gpu_bytes``: NVML's figure per (device, pid), which on a GPU is what it holds."""
    return pb.WarmRunner(engine=warm.engine, device=warm.device, pid=warm.pid, ready=warm.ready,
                         memory_bytes=gpu_bytes.get((warm.device, warm.pid), warm.memory_bytes))


def model_info(slot: SlotInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        id=slot.id,
        aliases=list(slot.aliases),
        description=slot.description,
        engine=slot.engine,
        state=state_to_pb(slot.state),
        device=slot.device,
        pid=slot.pid or 0,
        replica_pids=list(slot.replica_pids),
        memory_bytes=max(0, slot.memory_bytes),
        pinned=slot.pinned,
        # The proto promises 0 for a pinned model: it never unloads for idleness.
        keep_alive_seconds=0.0 if slot.pinned else slot.keep_alive,
        in_flight=slot.in_flight,
        queued=slot.queued,
        queue_capacity=slot.queue_capacity,
        last_used=timestamp(slot.last_used),
        loaded_at=timestamp(slot.loaded_at),
        error=slot.error,
        license=slot.license or "",
        license_note=slot.license_note or "",
    )


_DOWNLOAD: dict[Download, pb.DownloadState] = {
    Download.NOT_NEEDED: pb.DOWNLOAD_STATE_NOT_NEEDED,
    Download.NOT_DOWNLOADED: pb.DOWNLOAD_STATE_NOT_DOWNLOADED,
    Download.PARTIAL: pb.DOWNLOAD_STATE_PARTIAL,
    Download.DOWNLOADED: pb.DOWNLOAD_STATE_DOWNLOADED,
}


def known_model(known: KnownModel, slot: SlotInfo | None) -> pb.ModelInfo:
    """A model of ``ListModels`` with all: its slot as usual when the scheduler has one (a model
    this host serves, or one it ran before), else the catalog's facts, not loaded."""
    entry = known.entry
    if slot is not None:
        info = model_info(slot)
    else:
        info = pb.ModelInfo(id=entry.id, aliases=list(entry.aliases), description=entry.description,
                            engine=known.engine, state=pb.MODEL_STATE_NOT_LOADED,
                            license=entry.license or "", license_note=entry.license_note or "")
    info.size_bytes = max(0, known.size_bytes or 0)
    info.engines.extend(pb.ModelEngine(name=e.name, available=e.available, reason=e.reason)
                        for e in known.engines)
    info.download = _DOWNLOAD[known.download]
    info.unavailable_reason = known.unavailable
    return info


def event(item: Event) -> pb.Event:
    return pb.Event(
        sequence=item.sequence,
        time=timestamp(item.time),
        kind=item.kind,
        model=item.model,
        state=state_to_pb(item.state),
        message=item.message,
        progress=item.progress,
    )


def load_progress(item: Event, model: str) -> pb.LoadModelProgress:
    """One step of a load; ``model`` (the canonical id) fills in for events that lack it."""
    return pb.LoadModelProgress(
        model=item.model or model,
        state=state_to_pb(item.state),
        # Runners name their stages; the scheduler's own events only have a kind.
        stage=item.stage or item.kind.removeprefix("model."),
        progress=item.progress,
        message=item.message,
    )


def unload_result(result: UnloadResult) -> pb.UnloadModelResponse:
    return pb.UnloadModelResponse(
        model=result.model, was_loaded=result.was_loaded, freed_bytes=max(0, result.freed_bytes)
    )


def cache_inventory(inventory: CacheInventory) -> pb.ListCacheResponse:
    return pb.ListCacheResponse(
        cache_dir=str(inventory.cache_dir),
        total_bytes=inventory.total_bytes,
        repos=[
            pb.CachedRepo(
                repo_id=entry.repo.repo_id,
                repo_type=entry.repo.repo_type,
                size_bytes=entry.repo.size_bytes,
                revisions=[
                    pb.CachedRevision(
                        commit=rev.commit, refs=list(rev.refs), size_bytes=rev.size_bytes,
                        last_modified=timestamp(rev.last_modified),
                    )
                    for rev in entry.repo.revisions
                ],
                last_accessed=timestamp(entry.repo.last_accessed),
                last_modified=timestamp(entry.repo.last_modified),
                loaded_by_engine=entry.loaded_by_engine,
                in_catalog=entry.in_catalog,
            )
            for entry in inventory.entries
        ],
    )


def cache_deletion(deletion: CacheDeletion) -> pb.DeleteCacheResponse:
    return pb.DeleteCacheResponse(
        freed_bytes=deletion.freed_bytes, deleted_paths=list(deletion.deleted_paths)
    )


def gpu(snapshot: GpuSnapshot, models: dict[int, str]) -> pb.GetGpuResponse:
    """The GPU inventory; ``models`` maps the pids of ocrd's runners to the model each serves."""
    return pb.GetGpuResponse(
        available=snapshot.available,
        reason=snapshot.reason,
        driver_version=snapshot.driver_version,
        cuda_version=snapshot.cuda_version,
        devices=[gpu_device(device, models) for device in snapshot.devices],
    )


def gpu_device(device: GpuDevice, models: dict[int, str]) -> pb.GpuDevice:
    return pb.GpuDevice(
        index=device.index,
        name=device.name,
        uuid=device.uuid,
        total_bytes=max(0, device.total),
        used_bytes=max(0, device.used),
        free_bytes=max(0, device.free),
        utilization_percent=max(0, device.utilization),
        processes=[
            pb.GpuProcess(
                pid=process.pid, used_bytes=max(0, process.used_bytes),
                model=models.get(process.pid, ""), name=process.name,
            )
            for process in device.processes
        ],
    )


def cleanup_report(report: CleanupReport) -> pb.CleanupResponse:
    return pb.CleanupResponse(
        unloaded_models=list(report.unloaded_models),
        ended_pids=list(report.ended_pids),
        removed_containers=list(report.removed_containers),
        removed_sockets=list(report.removed_sockets),
        freed_bytes=max(0, report.freed_bytes),
        actions=list(report.actions),
    )


_CHECK_STATUS: dict[str, pb.CheckStatus] = {
    "ok": pb.CHECK_STATUS_OK,
    "warn": pb.CHECK_STATUS_WARN,
    "fail": pb.CHECK_STATUS_FAIL,
    "skipped": pb.CHECK_STATUS_SKIPPED,
}


def diagnosis(checks: list[Check]) -> pb.DiagnoseResponse:
    return pb.DiagnoseResponse(checks=[
        pb.Check(name=check.name, status=_CHECK_STATUS[check.status], message=check.message,
                 fix=check.fix)
        for check in checks
    ])


def decision(item: Decision) -> pb.ExplainModeResponse:
    """The planner's decision (the proto has no field for the GPU's UUID; the device names it)."""
    return pb.ExplainModeResponse(
        model=item.model,
        engine=item.engine,
        device=item.device,
        quantization=item.quantization,
        gpu_memory_utilization=item.gpu_memory_utilization,
        estimated_bytes=max(0, item.estimated_bytes),
        reasons=list(item.reasons),
        fits=item.fits,
        shortfall_bytes=max(0, item.shortfall_bytes),
        evictable_models=list(item.evictable_models),
    )


def cache_verification(verification: CacheVerification) -> pb.VerifyCacheResponse:
    return pb.VerifyCacheResponse(
        repo_id=verification.repo_id,
        ok=verification.ok,
        revisions=[
            pb.VerifiedRevision(
                commit=rev.commit, refs=list(rev.refs), files_checked=rev.files_checked,
                problems=[pb.FileProblem(file=p.file, problem=p.problem) for p in rev.problems],
            )
            for rev in verification.revisions
        ],
    )


def pull_progress(step: PullStep) -> pb.PullModelProgress:
    return pb.PullModelProgress(
        model=step.repo_id, file=step.file, downloaded_bytes=max(0, step.downloaded_bytes),
        total_bytes=max(0, step.total_bytes), done=step.done, message=step.message,
        commit=step.commit, files_total=step.files_total, files_done=step.files_done,
    )


def log_line(model: str, line: str) -> pb.LogLine:
    return pb.LogLine(model=model, line=line)


def image_pull_progress(step: ImagePullStep) -> pb.PullImageProgress:
    return pb.PullImageProgress(
        image=step.image, layer=step.layer, status=step.status,
        current_bytes=step.current_bytes, total_bytes=step.total_bytes, done=step.done,
        image_id=step.image_id, message=step.message,
    )


def stored_file(stored: StoredFile) -> pb.StoredFile:
    return pb.StoredFile(id=stored.id, filename=stored.filename, purpose=stored.purpose,
                         bytes=stored.bytes, created_at=timestamp(stored.created_at),
                         expires_at=timestamp(stored.expires_at))


def batch(item: Batch) -> pb.Batch:
    """From OpenAI's Batch object (``Batch.to_openai``): both always say the same."""
    shape = item.to_openai()
    counts = shape["request_counts"]
    errors = (shape["errors"] or {}).get("data") or []
    return pb.Batch(
        id=shape["id"], status=shape["status"], endpoint=shape["endpoint"],
        input_file_id=shape["input_file_id"], output_file_id=shape["output_file_id"] or "",
        error_file_id=shape["error_file_id"] or "", total=counts["total"],
        completed=counts["completed"], failed=counts["failed"],
        errors=[pb.BatchError(code=e.get("code") or "", message=e.get("message") or "",
                              param=e.get("param") or "", line=e.get("line") or 0) for e in errors],
        metadata=shape["metadata"] or {}, created_at=timestamp(shape["created_at"]),
        expires_at=timestamp(shape["expires_at"]), ended=item.ended,
        **{name: timestamp(shape[name]) for name in TIMES},
    )
