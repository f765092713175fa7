"""The ``ocrd.v1.Control`` servicer: thin handlers over the scheduler.

Each handler converts the request, calls the scheduler, and converts the answer back. Errors are
raised, never set on the context by hand: ``ocrd.control.errors.ErrorInterceptor`` turns an
``OcrdError`` into its status code and anything else into INTERNAL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio

from ocrd.cache.pull import Puller
from ocrd.cache.service import CacheService
from ocrd.control import convert
from ocrd.control.file_transfer import file_chunks, receive_upload
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.core.engines import engine_wish, quantization_wish
from ocrd.core.known_models import known_models
from ocrd.core.scheduler import Scheduler
from ocrd.errors import EngineUnavailable, InvalidRequest
from ocrd.events import ModelState
from ocrd.jobs.batches import BatchService
from ocrd.jobs.files import FileService
from ocrd.model_ids import check_model_name, check_optional_model_name, check_revision
from ocrd.ops import cleanup, doctor
from ocrd.planning.gpu import GpuProbe
from ocrd.runners import logs as runner_logs
from ocrd.runners.vllm import image_pull


@dataclass
class DaemonInfo:
    """What GetStatus reports about the daemon itself.

    Mutable on purpose: the daemon builds the servicer before its listeners are bound, then fills
    in ``http_url`` (port 0 picks a free one) and ``grpc_addresses`` once they are.
    """

    version: str
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)  # epoch seconds
    http_url: str = ""
    grpc_addresses: list[str] = field(default_factory=list)
    config_path: str = ""
    default_model: str = ""


@dataclass
class JobServices:
    """The Files and Batch APIs' cores, shared with the HTTP API."""

    files: FileService
    batches: BatchService
    max_file_bytes: Callable[[], int]  # limits.max_file_bytes, as reloads leave it


class ControlServicer(control_pb2_grpc.ControlServicer):
    def __init__(
        self,
        scheduler: Scheduler,
        daemon_info: DaemonInfo,
        *,
        clock: Callable[[], float] = time.time,
        gpu: GpuProbe | None = None,
        runner_dir: Path | None = None,
        downloads: Puller | None = None,
        jobs: JobServices | None = None,
    ):
        self._scheduler = scheduler
        self._info = daemon_info
        self._clock = clock  # wall clock, for uptime; tests pass a fixed one
        self._gpu = gpu if gpu is not None else GpuProbe()  # NVML; tests pass a FakeNvml one
        self._runner_dir = runner_dir  # where the runners' sockets are, for Cleanup
        # The daemon's downloads (ocrctl pull): one per repository, whichever call asks.
        self._downloads = downloads if downloads is not None else Puller()
        self._job_services = jobs  # the daemon's files and batches; None in tests of the rest

    def _cache(self) -> CacheService:
        return CacheService(self._scheduler, self._downloads)

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        info = self._info
        return pb.GetStatusResponse(
            version=info.version,
            pid=info.pid,
            uptime_seconds=max(0.0, self._clock() - info.started_at),
            http_url=info.http_url,
            grpc_addresses=list(info.grpc_addresses),
            models=self._model_infos(loaded_only=True),
            config_path=info.config_path,
            default_model=info.default_model,
            warm_runners=await self._warm_runners(),
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        if not request.all:
            return pb.ListModelsResponse(models=self._model_infos(loaded_only=request.loaded_only),
                                         warm_runners=await self._warm_runners())
        if request.loaded_only:
            raise InvalidRequest("all and loaded_only exclude each other: ask for one")
        # The slots of servable models, and of any other the scheduler still holds (a failed one).
        slots = {info.id: info for info in (*self._scheduler.models(), *self._scheduler.active_models())}
        directory = self._scheduler.directory
        return pb.ListModelsResponse(
            models=[convert.known_model(known, slots.get(known.entry.id)) for known in known_models(directory)],
            warm_runners=await self._warm_runners(), cache_dir=str(directory.hub_dir))

    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LoadModelProgress]:
        check_engine_request(request.engine, request.quantization)
        model = self._scheduler.resolve(check_model_name(request.model)).id
        keep_alive = request.keep_alive_seconds if request.HasField("keep_alive_seconds") else None
        # The scheduler ends with a "model.ready" event (also for a model already loaded), or
        # raises: the proto's "last message READY, or a non-OK status".
        steps = self._scheduler.load_progress(
            model, keep_alive=keep_alive, pin=request.pin,
            engine=request.engine or None, quantization=request.quantization or None,
        )
        async for item in steps:
            yield convert.load_progress(item, model)

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        return convert.unload_result(await self._scheduler.unload(check_model_name(request.model)))

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        name = check_optional_model_name(request.model)
        model = self._scheduler.resolve(name).id if name else None
        events = self._scheduler.events.subscribe(model)
        # Headers go out once the subscription exists: a client that waits for them knows that
        # every event published from then on reaches it. The stream ends when the client cancels.
        await context.send_initial_metadata(())
        async for item in events:
            yield convert.event(item)

    async def ExplainMode(
        self, request: pb.ExplainModeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExplainModeResponse:
        check_engine_request(request.engine, request.quantization)
        check_model_name(request.model)
        decision = await self._scheduler.explain(
            request.model, engine=request.engine or None, quantization=request.quantization or None
        )
        return convert.decision(decision)

    async def GetGpu(
        self, request: pb.GetGpuRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGpuResponse:
        snapshot = await self._gpu.snapshot_async()  # NVML blocks: off the event loop
        # Runner processes by pid; container runners' pids (their host pids) are issue 5's.
        models = {pid: slot.id for slot in self._scheduler.models() for pid in slot.replica_pids}
        # Warm runners are ocrd's too (a warm one's CUDA context shows in NVML).
        models |= {warm.pid: f"(warm {warm.engine} runner)" for warm in self._scheduler.warm_runners()}
        return convert.gpu(snapshot, models)

    async def ListCache(
        self, request: pb.ListCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCacheResponse:
        return convert.cache_inventory(await self._cache().inventory())

    async def DeleteCache(
        self, request: pb.DeleteCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCacheResponse:
        deletion = await self._cache().delete(
            check_model_name(request.model), check_revision(request.revision),
            dry_run=request.dry_run, force=request.force,
        )
        return convert.cache_deletion(deletion)

    async def VerifyCache(
        self, request: pb.VerifyCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyCacheResponse:
        verification = await self._cache().verify(
            check_model_name(request.model), check_revision(request.revision))
        return convert.cache_verification(verification)

    async def Diagnose(
        self, request: pb.DiagnoseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DiagnoseResponse:
        directory = self._scheduler.directory
        model = check_optional_model_name(request.model) or directory.settings.default_model
        fit = await doctor.plan_fit(self._scheduler, model, explicit=bool(request.model))
        # The checks block (NVML, Docker, the filesystem): a worker thread, still as our user.
        checks = await asyncio.to_thread(
            doctor.run_checks, directory.settings, fit, self._gpu, directory.catalog
        )
        return convert.diagnosis(checks)

    async def PullModel(
        self, request: pb.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PullModelProgress]:
        # Cancelling the stream stops the download unless another client follows it (ocrd.cache.pull).
        model, revision = check_model_name(request.model), check_revision(request.revision)
        pull = self._cache().pull(model, revision)
        async for step in pull:
            yield convert.pull_progress(step)

    async def Cleanup(
        self, request: pb.CleanupRequest, context: grpc.aio.ServicerContext
    ) -> pb.CleanupResponse:
        cleaner = cleanup.Cleanup.for_daemon(self._scheduler, self._gpu, daemon_pid=os.getpid(),
                                             runner_dir=self._runner_dir)
        return convert.cleanup_report(await cleaner.run(dry_run=request.dry_run))

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LogLine]:
        runner = self._scheduler.runner_of(check_model_name(request.model))
        tail = request.tail if request.HasField("tail") else runner_logs.DEFAULT_TAIL
        # Following ends when the runner does (unload, crash) or when the client cancels.
        async for line in runner_logs.runner_lines(runner, tail, follow=request.follow):
            yield convert.log_line(runner.model_id, line)

    async def PullImage(
        self, request: pb.PullImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PullImageProgress]:
        image = request.image or self._scheduler.directory.settings.vllm.image
        # Cancelling the stream stops the pull (ocrd.runners.vllm.image_pull).
        async for step in image_pull.pull_image(image):
            yield convert.image_pull_progress(step)

    async def UploadFile(
        self, request_iterator: AsyncIterable[pb.UploadFileRequest], context: grpc.aio.ServicerContext
    ) -> pb.StoredFile:
        jobs = self._jobs()
        stored = await receive_upload(jobs.files, request_iterator, max_bytes=jobs.max_file_bytes())
        return convert.stored_file(stored)

    async def ReadFile(
        self, request: pb.ReadFileRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.FileChunk]:
        async for stored, data in file_chunks(self._jobs().files, request.id):
            yield pb.FileChunk(file=convert.stored_file(stored) if stored else None, data=data)

    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.Batch:
        batch = await self._jobs().batches.create(
            input_file_id=request.input_file_id, endpoint=request.endpoint, completion_window="24h",
            metadata=dict(request.metadata) or None)
        return convert.batch(batch)

    async def GetBatch(self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext) -> pb.Batch:
        return convert.batch(await self._jobs().batches.get(request.id))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBatchesResponse:
        batches, has_more = await self._jobs().batches.list_batches(
            after=request.after or None, limit=request.limit or 20)
        return pb.ListBatchesResponse(batches=[convert.batch(b) for b in batches], has_more=has_more)

    async def CancelBatch(self, request: pb.CancelBatchRequest, context: grpc.aio.ServicerContext) -> pb.Batch:
        return convert.batch(await self._jobs().batches.cancel(request.id))

    async def WatchBatch(
        self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Batch]:
        async for batch in self._jobs().batches.watch(request.id):
            yield convert.batch(batch)

    def _jobs(self) -> JobServices:
        if self._job_services is None:
            raise EngineUnavailable("this server has no Files and Batch APIs (no state_dir)")
        return self._job_services

    async def _warm_runners(self) -> list[pb.WarmRunner]:
        warm = list(self._scheduler.warm_runners())
        gpu_bytes: dict[tuple[str, int], int] = {}
        if any(w.device.startswith("cuda") for w in warm):  # NVML only when it has something to say
            snapshot = await self._gpu.snapshot_async()
            gpu_bytes = {(f"cuda:{d.index}", p.pid): p.used_bytes for d in snapshot.devices for p in d.processes}
        return [convert.warm_runner(w, gpu_bytes) for w in warm]

    def _model_infos(self, *, loaded_only: bool) -> list[pb.ModelInfo]:
        slots = self._scheduler.models()
        if loaded_only:
            slots = [slot for slot in slots if slot.state is not ModelState.NOT_LOADED]
        return [convert.model_info(slot) for slot in slots]


def check_engine_request(engine: str, quantization: str) -> None:
    """Refuses engine / quantization names that do not exist (``ocrd.core.engines``; the
    scheduler judges the rest), before the model's name is looked at."""
    engine_wish(engine)
    quantization_wish(quantization)
