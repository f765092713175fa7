"""The gRPC control plane for real: start_control_server on a Unix socket, the real Scheduler with
FakeRunners behind it, and grpc.aio clients (Control, the standard health service, reflection).

ocrctl against this same server: tests/integration/test_ocrctl.py.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import socket
import stat

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.errors import GENERIC_INTERNAL_MESSAGE, ConfigError, ModelLoadFailed
from ocrd.planning.gpu import GpuProbe
from tests.support.control import PPOCR, PPOCR_MEMORY, STEPS, server_with_fake_gpus, settings_for
from tests.support.fake_nvml import GIB


async def load_all(stub, **request) -> list[pb.LoadModelProgress]:
    return [step async for step in stub.LoadModel(pb.LoadModelRequest(**request))]


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def drain(call) -> None:
    """Reads a stream to its end (raising its error status, if any)."""
    async for _ in call:
        pass


# --- Control RPCs -----------------------------------------------------------------------------


async def test_status_reports_the_daemon_and_only_models_with_a_slot_in_use(stub, control):
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert (status.version, status.pid, status.http_url) == ("9.8.7", 4242, "http://127.0.0.1:8000")
    assert list(status.grpc_addresses) == control.addresses
    assert status.default_model == PPOCR and status.uptime_seconds == 90.0
    assert list(status.models) == []

    await load_all(stub, model="ppocr")
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert [(m.id, m.state) for m in status.models] == [(PPOCR, pb.MODEL_STATE_READY)]


async def test_list_models_lists_every_servable_model_and_filters_loaded_ones(stub):
    everything = await stub.ListModels(pb.ListModelsRequest())
    ppocr = next(m for m in everything.models if m.id == PPOCR)
    assert list(ppocr.aliases) == ["ppocr"] and ppocr.engine == "builtin" and ppocr.description
    assert {m.state for m in everything.models} == {pb.MODEL_STATE_NOT_LOADED}
    assert list((await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models) == []

    await load_all(stub, model=PPOCR)
    loaded = (await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models
    assert [m.id for m in loaded] == [PPOCR]
    assert loaded[0].memory_bytes == PPOCR_MEMORY and loaded[0].pid > 0
    assert loaded[0].device == "cpu" and loaded[0].HasField("loaded_at")


async def test_list_models_with_all_adds_what_this_host_cannot_serve_and_keeps_the_slots(stub):
    await load_all(stub, model=PPOCR)
    listing = await stub.ListModels(pb.ListModelsRequest(all=True))
    models = {m.id: m for m in listing.models}
    assert listing.cache_dir and len(models) > 20  # the whole catalog, on an empty cache
    ppocr, dots = models[PPOCR], models["rednote-hilab/dots.ocr"]
    # A served model as ListModels shows it anyway (its slot: state, pid), plus the new facts.
    assert (ppocr.state, ppocr.download, ppocr.unavailable_reason) == (
        pb.MODEL_STATE_READY, pb.DOWNLOAD_STATE_NOT_NEEDED, "")
    assert ppocr.pid > 0 and [e.name for e in ppocr.engines] == ["builtin"]
    assert (dots.state, dots.download) == (pb.MODEL_STATE_NOT_LOADED, pb.DOWNLOAD_STATE_NOT_DOWNLOADED)
    assert dots.size_bytes > 0 and "ocrctl pull rednote-hilab/dots.ocr" in dots.unavailable_reason


async def test_list_models_refuses_all_with_loaded_only(stub):
    error = await rpc_error(stub.ListModels(pb.ListModelsRequest(all=True, loaded_only=True)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "exclude each other" in error.details()


async def test_load_streams_progress_while_loading_and_ends_ready(stub, runners):
    runners.plan(PPOCR, progress=STEPS, gated=True, memory_bytes=PPOCR_MEMORY)
    call = stub.LoadModel(pb.LoadModelRequest(model="ppocr"))
    seen = []
    async for step in call:
        seen.append(step)
        if step.stage == "loading recognizer":
            break
    # The steps arrived while the model was still loading: the stream is live, not a replay.
    listing = await stub.ListModels(pb.ListModelsRequest(loaded_only=True))
    assert [m.state for m in listing.models] == [pb.MODEL_STATE_LOADING]
    runners.made(PPOCR)[0].release()
    seen += [step async for step in call]

    assert all(step.model == PPOCR for step in seen)
    assert [s.stage for s in seen if s.progress >= 0][:3] == [
        "runner started", "loading detector", "loading recognizer"
    ]
    assert [s.state for s in seen[:-1]] == [pb.MODEL_STATE_LOADING] * (len(seen) - 1)
    assert seen[-1].state == pb.MODEL_STATE_READY and seen[-1].progress == 1.0


async def test_load_of_a_loaded_model_still_ends_with_ready(stub):
    await load_all(stub, model=PPOCR)
    again = await load_all(stub, model="ppocr")
    assert again[-1].state == pb.MODEL_STATE_READY


async def test_load_applies_pin_and_keep_alive(stub):
    await load_all(stub, model=PPOCR, keep_alive_seconds=42.0)
    (model,) = (await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models
    assert model.keep_alive_seconds == 42.0 and not model.pinned

    await load_all(stub, model=PPOCR, pin=True)
    (model,) = (await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models
    assert model.pinned and model.keep_alive_seconds == 0.0  # the proto's "0 when pinned"


async def test_failed_load_ends_the_stream_with_the_errors_status_and_reason(stub, runners):
    runners.plan(PPOCR, error=ModelLoadFailed("runner exited: libonnxruntime.so missing"))
    call = stub.LoadModel(pb.LoadModelRequest(model=PPOCR))
    error = await rpc_error(drain(call))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "libonnxruntime.so missing" in error.details()
    (model,) = (await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models
    assert model.state == pb.MODEL_STATE_FAILED and "libonnxruntime.so missing" in model.error


async def test_unload_frees_the_model_and_says_when_there_was_nothing_to_do(stub, runners):
    await load_all(stub, model=PPOCR)
    result = await stub.UnloadModel(pb.UnloadModelRequest(model="ppocr"))
    assert (result.model, result.was_loaded, result.freed_bytes) == (PPOCR, True, PPOCR_MEMORY)
    assert runners.made(PPOCR)[0].stopped
    assert list((await stub.ListModels(pb.ListModelsRequest(loaded_only=True))).models) == []

    again = await stub.UnloadModel(pb.UnloadModelRequest(model=PPOCR))
    assert (again.was_loaded, again.freed_bytes) == (False, 0)


@pytest.mark.parametrize("rpc", ["LoadModel", "UnloadModel", "WatchEvents"])
async def test_unknown_model_is_not_found(stub, rpc):
    request = {
        "LoadModel": pb.LoadModelRequest, "UnloadModel": pb.UnloadModelRequest,
        "WatchEvents": pb.WatchEventsRequest,
    }[rpc](model="no-such-model")
    call = getattr(stub, rpc)(request)
    error = await rpc_error(drain(call) if rpc != "UnloadModel" else call)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'no-such-model' does not exist" in error.details()


@pytest.mark.parametrize(
    ("engine", "quantization", "says"),
    [
        ("vllm", "", "cannot run on the vllm engine"),
        ("onnx", "", "unknown engine 'onnx'"),
        ("", "4bit", "does not quantize"),
        ("", "2bit", "unknown quantization '2bit'"),
    ],
)
async def test_engine_or_quantization_the_model_cannot_use_is_invalid(stub, engine, quantization, says):
    call = stub.LoadModel(pb.LoadModelRequest(model=PPOCR, engine=engine, quantization=quantization))
    error = await rpc_error(drain(call))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in error.details()


async def test_explicit_builtin_engine_without_quantization_loads(stub):
    steps = await load_all(stub, model=PPOCR, engine="builtin", quantization="none")
    assert steps[-1].state == pb.MODEL_STATE_READY


async def test_get_gpu_reports_this_hosts_gpus_or_why_there_are_none(stub):
    answer = await stub.GetGpu(pb.GetGpuRequest())
    here = GpuProbe().snapshot()  # the real pynvml, as the servicer's default probe
    assert answer.available == here.available
    if not here.available:  # a host without an NVIDIA driver, like CI's
        assert answer.reason and "\n" not in answer.reason and not answer.devices
    else:
        assert [d.uuid for d in answer.devices] == [d.uuid for d in here.devices]


async def test_get_gpu_attributes_a_runners_pid_to_its_model(settings, scheduler, daemon_info, runners):
    await scheduler.load(PPOCR)
    runner = runners.made(PPOCR)[0]
    async with server_with_fake_gpus(settings, scheduler, daemon_info, runner.fake_pid) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            answer = await control_pb2_grpc.ControlStub(channel).GetGpu(pb.GetGpuRequest())
    assert (answer.available, answer.driver_version, answer.cuda_version) == (True, "550.54.15", "12.4")
    assert [d.name for d in answer.devices] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    h100 = answer.devices[0]
    assert (h100.total_bytes, h100.used_bytes, h100.free_bytes, h100.utilization_percent) == (
        80 * GIB, 20 * GIB, 60 * GIB, 37
    )
    ours, other = h100.processes
    assert (ours.pid, ours.used_bytes, ours.model) == (runner.fake_pid, 3 * GIB, PPOCR)
    assert (other.pid, other.model) == (os.getpid(), "") and other.name  # the test process


async def test_watch_events_resolves_an_alias_and_follows_that_model_until_cancelled(stub, scheduler):
    call = stub.WatchEvents(pb.WatchEventsRequest(model="ppocr"))
    await call.initial_metadata()  # sent once the subscription exists
    await load_all(stub, model=PPOCR)
    kinds = []
    async for event in call:
        assert event.model == PPOCR and event.sequence > 0 and event.HasField("time")
        kinds.append(event.kind)
        if event.kind == "model.ready":
            break
    assert kinds[0] == "model.loading" and "model.progress" in kinds

    # The handler ends when the client cancels: its subscription leaves the bus (the bus holds
    # subscriptions weakly, so it goes once the handler's frame is gone).
    assert len(scheduler.events._subscribers) == 1
    call.cancel()
    for _ in range(1000):
        if not scheduler.events._subscribers:
            break
        await asyncio.sleep(0.005)
    assert len(scheduler.events._subscribers) == 0


# --- errors that are not OcrdErrors -------------------------------------------------------------


class _BrokenStreamServicer(ControlServicer):
    """A servicer with a bug in a streaming handler, after its first message."""

    async def WatchEvents(self, request, context):
        yield pb.Event(kind="first")
        raise KeyError("bug")


async def test_a_bug_becomes_internal_with_a_generic_message_and_a_logged_traceback(
    stub, daemon_info, caplog
):
    daemon_info.version = 123  # not a string: building the response raises TypeError
    with caplog.at_level(logging.ERROR, logger="ocrd.control"):
        error = await rpc_error(stub.GetStatus(pb.GetStatusRequest()))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == GENERIC_INTERNAL_MESSAGE
    (record,) = [r for r in caplog.records if r.name == "ocrd.control"]
    assert record.exc_info is not None and record.exc_info[0] is TypeError


async def test_a_bug_in_a_stream_becomes_internal_after_what_was_sent(settings, scheduler, daemon_info):
    server = await start_control_server(settings, _BrokenStreamServicer(scheduler, daemon_info))
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            call = control_pb2_grpc.ControlStub(channel).WatchEvents(pb.WatchEventsRequest())
            assert (await call.read()).kind == "first"
            error = await rpc_error(call.read())
    finally:
        await server.stop(None)
    assert error.code() == grpc.StatusCode.INTERNAL and error.details() == GENERIC_INTERNAL_MESSAGE


# --- health and reflection ----------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "ocrd.v1.Control"])
async def test_standard_health_check_answers_serving(channel, service):
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def reflect(channel, path: str, request: reflection_pb2.ServerReflectionRequest):
    # v1 and v1alpha share their messages field for field (only the package differs), so
    # v1alpha's generated classes speak v1 on the wire; the method path selects the version.
    method = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = method(iter([request]))
    return [answer async for answer in call][0]


V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def test_reflection_v1_lists_and_describes_the_control_service(channel):
    listing = await reflect(channel, V1, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listing.list_services_response.service}
    assert {"ocrd.v1.Control", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names

    answer = await reflect(
        channel, V1, reflection_pb2.ServerReflectionRequest(file_containing_symbol="ocrd.v1.Control")
    )
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answer.file_descriptor_response.file_descriptor_proto]
    control_file = next(f for f in files if f.package == "ocrd.v1")
    methods = {m.name for m in control_file.service[0].method}
    assert {"GetStatus", "LoadModel", "WatchEvents"} <= methods
    assert "google/protobuf/timestamp.proto" in {f.name for f in files}  # dependencies included


async def test_reflection_v1_describes_itself_and_v1alpha_still_answers(channel):
    answer = await reflect(
        channel, V1,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
    )
    (raw,) = answer.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"

    v1alpha = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = v1alpha.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name async for answer in call for s in answer.list_services_response.service}
    assert "ocrd.v1.Control" in names


# --- the socket ---------------------------------------------------------------------------------


async def test_socket_is_created_0660_in_a_new_0755_directory_and_removed_on_stop(control, settings):
    path = settings.grpc.socket
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
    assert control.addresses == [f"unix://{path}"]
    await control.stop(None)
    assert not path.exists()


async def test_socket_group_is_applied(socket_dir, scheduler, daemon_info):
    group = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)
    if group is None or (os.geteuid() != 0 and group.gr_name not in _my_groups()):
        pytest.skip("needs a second group this user may give files to")
    settings = settings_for(socket_dir, socket_group=group.gr_name, socket_mode=0o640)
    server = await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    try:
        info = os.stat(settings.grpc.socket)
        assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (group.gr_gid, 0o640)
    finally:
        await server.stop(None)


def _my_groups() -> set[str]:
    return {grp.getgrgid(gid).gr_name for gid in os.getgroups()}


async def test_unknown_socket_group_is_a_clear_config_error_leaving_no_socket(socket_dir, scheduler, daemon_info):
    settings = settings_for(socket_dir, socket_group="no-such-group-ocrd")
    with pytest.raises(ConfigError, match="group 'no-such-group-ocrd' does not exist"):
        await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    assert not settings.grpc.socket.exists()


async def test_a_second_server_on_a_live_socket_is_refused_and_the_first_keeps_serving(
    control, settings, scheduler, daemon_info, stub
):
    with pytest.raises(ConfigError, match="already serving on unix://"):
        await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    assert (await stub.GetStatus(pb.GetStatusRequest())).version == "9.8.7"


async def test_a_stale_socket_from_a_crash_is_replaced(settings, scheduler, daemon_info):
    settings.grpc.socket.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: what a crash leaves
        dead.bind(os.fspath(settings.grpc.socket))
    server = await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            assert (await control_pb2_grpc.ControlStub(channel).GetStatus(pb.GetStatusRequest())).version == "9.8.7"
    finally:
        await server.stop(None)


async def test_a_file_that_is_not_a_socket_is_left_alone(settings, scheduler, daemon_info):
    settings.grpc.socket.parent.mkdir(parents=True)
    settings.grpc.socket.write_text("precious")
    with pytest.raises(ConfigError, match="is not a socket"):
        await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    assert settings.grpc.socket.read_text() == "precious"


# --- ExplainMode: the planner's decision over real gRPC, GPUs from FakeNvml ------------------------

QWEN_2B = "Qwen/Qwen2-VL-2B-Instruct"


@pytest.fixture
def sized_hub(tmp_path):
    """Qwen2-VL-2B in the cache with its real parameter split (real safetensors headers)."""
    from tests.support.sized_models import cache_model, vlm_tensors

    mib = 2**20
    cache_model(tmp_path, QWEN_2B, vlm_tensors(vision=644 * mib, embeddings=224 * mib, linear=1240 * mib))
    return tmp_path


async def explain(address: str, **request) -> pb.ExplainModeResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await control_pb2_grpc.ControlStub(channel).ExplainMode(pb.ExplainModeRequest(**request))


async def test_explain_mode_answers_the_planners_choice_on_the_gpu_with_most_free_memory(socket_dir, sized_hub):
    from tests.support.control import planning_server
    from tests.support.fake_nvml import two_gpus

    async with planning_server(socket_dir, sized_hub, two_gpus()) as (address, _):
        answer = await explain(address, model="qwen2-vl-2b")
    assert (answer.model, answer.engine, answer.device, answer.quantization) == (
        QWEN_2B, "transformers", "cuda:0", "none")  # the H100: 60 GiB free, the L4 24
    assert answer.fits and answer.gpu_memory_utilization == 0.0
    assert 4 * GIB < answer.estimated_bytes < 8 * GIB
    assert answer.reasons[0].startswith("transformers unquantized fits: it needs about")
    assert "sizes from safetensors headers" in answer.reasons[1]


async def test_explain_mode_honours_an_asked_quantization(socket_dir, sized_hub):
    from tests.support.control import planning_server
    from tests.support.fake_nvml import two_gpus

    async with planning_server(socket_dir, sized_hub, two_gpus()) as (address, _):
        answer = await explain(address, model=QWEN_2B, quantization="4bit")
    assert (answer.engine, answer.quantization, answer.fits) == ("transformers", "4bit", True)


async def test_explain_mode_says_what_is_missing_when_nothing_fits(socket_dir, sized_hub):
    from tests.support.control import planning_server
    from tests.support.fake_nvml import FakeDevice, FakeNvml

    small = FakeNvml([FakeDevice("NVIDIA T400", "GPU-33333333-aaaa-bbbb-cccc-000000000000",
                                 total=4 * GIB, used=2 * GIB)])
    async with planning_server(socket_dir, sized_hub, small) as (address, _):
        answer = await explain(address, model=QWEN_2B, quantization="none")
    assert (answer.fits, answer.engine, answer.device) == (False, "", "cuda:0")
    assert answer.shortfall_bytes > 3 * GIB and list(answer.evictable_models) == []
    assert answer.reasons[0].startswith("does not fit: transformers, unquantized needs about")


async def test_explain_mode_of_a_builtin_model_is_the_cpu(stub):
    answer = await stub.ExplainMode(pb.ExplainModeRequest(model="ppocr"))
    assert (answer.model, answer.engine, answer.device, answer.fits) == (PPOCR, "builtin", "cpu", True)
    assert "needs no GPU memory" in answer.reasons[0]


@pytest.mark.parametrize(("request_fields", "code", "says"), [
    ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "'no-such-model' does not exist"),
    ({"model": PPOCR, "engine": "vllm"}, grpc.StatusCode.INVALID_ARGUMENT, "cannot run on the vllm engine"),
    ({"model": PPOCR, "quantization": "4bit"}, grpc.StatusCode.INVALID_ARGUMENT, "does not quantize"),
    ({"model": PPOCR, "quantization": "3bit"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown quantization '3bit'"),
])
async def test_explain_mode_refuses_what_cannot_be_explained(stub, request_fields, code, says):
    error = await rpc_error(stub.ExplainMode(pb.ExplainModeRequest(**request_fields)))
    assert error.code() == code and says in error.details()

