"""The ``ocrd.v1.Control`` servicer: thin handlers over the scheduler.

Each handler converts the request, calls the scheduler, and converts the answer back. Errors are
raised, never set on the context by hand: ``ocrd.control.errors.ErrorInterceptor`` turns an
``OcrdError`` into its status code and anything else into INTERNAL.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc.aio

from ocrd.cache_service import CacheService
from ocrd.control import convert
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.errors import InvalidRequest, NotImplementedYet
from ocrd.events import ModelState
from ocrd.gpu import GpuProbe
from ocrd.scheduler import Scheduler

# Engines and quantizations this version can honour when a client asks for one explicitly.
KNOWN_ENGINES = {"", "builtin", "transformers", "vllm"}
KNOWN_QUANTIZATIONS = {"", "auto", "none", "8bit", "4bit"}

_LATER = "in a later release of ocrd"
NOT_YET = {
    "ExplainMode": f"ExplainMode arrives with automatic engine choice (the planner) {_LATER}; "
    "meanwhile a model runs on the first engine of its catalog entry that this host has",
    "PullModel": f"PullModel arrives with downloads into the shared Hugging Face cache {_LATER}; "
    "'hf download REPO' (huggingface_hub) fills the shared cache meanwhile",
    "VerifyCache": f"VerifyCache arrives with cache verification {_LATER}",
    "Diagnose": f"Diagnose arrives with `ocrctl doctor` {_LATER}",
    "Cleanup": f"Cleanup arrives with the adoption of orphaned runners and containers {_LATER}; "
    "'ocrctl unload MODEL' frees a model now",
}


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


class ControlServicer(control_pb2_grpc.ControlServicer):
    def __init__(
        self,
        scheduler: Scheduler,
        daemon_info: DaemonInfo,
        *,
        clock: Callable[[], float] = time.time,
        gpu: GpuProbe | None = None,
    ):
        self._scheduler = scheduler
        self._info = daemon_info
        self._clock = clock  # wall clock, for uptime; tests pass a fixed one
        self._gpu = gpu if gpu is not None else GpuProbe()  # NVML; tests pass a FakeNvml one

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
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=self._model_infos(loaded_only=request.loaded_only))

    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LoadModelProgress]:
        check_engine_request(request.engine, request.quantization)
        model = self._scheduler.resolve(request.model).id
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
        return convert.unload_result(await self._scheduler.unload(request.model))

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        model = self._scheduler.resolve(request.model).id if request.model else None
        events = self._scheduler.events.subscribe(model)
        # Headers go out once the subscription exists: a client that waits for them knows that
        # every event published from then on reaches it. The stream ends when the client cancels.
        await context.send_initial_metadata(())
        async for item in events:
            yield convert.event(item)

    async def ExplainMode(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedYet(NOT_YET["ExplainMode"])

    async def GetGpu(
        self, request: pb.GetGpuRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGpuResponse:
        snapshot = await self._gpu.snapshot_async()  # NVML blocks: off the event loop
        # Runner processes by pid; container runners' pids (their host pids) are issue 5's.
        models = {slot.pid: slot.id for slot in self._scheduler.models() if slot.pid}
        return convert.gpu(snapshot, models)

    async def ListCache(
        self, request: pb.ListCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCacheResponse:
        return convert.cache_inventory(await CacheService(self._scheduler).inventory())

    async def DeleteCache(
        self, request: pb.DeleteCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCacheResponse:
        deletion = await CacheService(self._scheduler).delete(
            request.model, request.revision, dry_run=request.dry_run, force=request.force
        )
        return convert.cache_deletion(deletion)

    async def VerifyCache(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedYet(NOT_YET["VerifyCache"])

    async def Diagnose(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedYet(NOT_YET["Diagnose"])

    async def PullModel(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedYet(NOT_YET["PullModel"])

    async def Cleanup(self, request: object, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedYet(NOT_YET["Cleanup"])

    def _model_infos(self, *, loaded_only: bool) -> list[pb.ModelInfo]:
        slots = self._scheduler.models()
        if loaded_only:
            slots = [slot for slot in slots if slot.state is not ModelState.NOT_LOADED]
        return [convert.model_info(slot) for slot in slots]


def check_engine_request(engine: str, quantization: str) -> None:
    """Refuses engine / quantization names that do not exist (the scheduler judges the rest)."""
    if engine not in KNOWN_ENGINES:
        raise InvalidRequest(
            f"unknown engine {engine!r}; use one of: {', '.join(sorted(KNOWN_ENGINES - {''}))}",
            param="engine",
        )
    if quantization not in KNOWN_QUANTIZATIONS:
        raise InvalidRequest(
            f"unknown quantization {quantization!r}; use one of: "
            f"{', '.join(sorted(KNOWN_QUANTIZATIONS - {''}))}",
            param="quantization",
        )
