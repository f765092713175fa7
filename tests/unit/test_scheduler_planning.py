"""The real Scheduler loading from the planner's decisions: the GPU seen through FakeNvml (this
machine has none), runners that show up in it while they run (FakeRunner), and cached models with
real safetensors headers (sparse files in a real cache layout).

What the runner gets (device, quantization, CUDA_VISIBLE_DEVICES), eviction by measured memory,
InsufficientMemory, and ``explain`` agreeing with the load it explains.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.scheduler import Scheduler
from ocrd.errors import EngineUnavailable, InsufficientMemory, ModelNotFound
from ocrd.events import ModelState
from ocrd.planning.availability import _missing_packages
from ocrd.planning.gpu import GpuProbe
from tests.support.fake_nvml import GIB, FakeDevice, FakeNvml
from tests.support.fake_runner import FakeRunnerFactory
from tests.support.sized_models import cache_model, vlm_tensors

MIB = 2**20
A, B = "org/vlm-a", "org/vlm-b"
C = "org/vlm-c"  # in the catalog with its sizes, never downloaded
UUID_0 = "GPU-00000000-aaaa-bbbb-cccc-000000000000"
UUID_1 = "GPU-11111111-aaaa-bbbb-cccc-000000000000"
CATALOG = Catalog([
    CatalogEntry(A, aliases=("a",), engines=("transformers", "vllm")),
    CatalogEntry(B, aliases=("b",), engines=("transformers",)),
    CatalogEntry(C, aliases=("c",), engines=("transformers",), params_billion=4.0,
                 bf16_bytes=8_000_000_000, vision_params_billion=0.25),
])
# ~4.0B parameters: bf16 needs ~9.4 GiB with its headroom, 8-bit ~6.4 GiB, 4-bit ~5.1 GiB.
TENSORS = vlm_tensors(vision=256 * MIB, embeddings=512 * MIB, linear=3072 * MIB)
RUNNER_MEMORY = 8704 * MIB  # what NVML shows for a runner of it (8.5 GiB)


@pytest.fixture(autouse=True)
async def _hang_guard():
    """A hang fails the test instead of the run (not a speed check: tests take milliseconds)."""
    loop = asyncio.get_running_loop()
    handle = loop.call_later(20, lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
    yield
    handle.cancel()


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    _missing_packages.cache_clear()
    for model in (A, B):
        cache_model(tmp_path, model, TENSORS)
    return tmp_path


def card(uuid: str, total_gib: int, used_gib: int = 0) -> FakeDevice:
    return FakeDevice("NVIDIA Test", uuid, total=total_gib * GIB, used=used_gib * GIB)


@pytest.fixture
async def make(hub):
    built: list[Scheduler] = []

    def build(*devices: FakeDevice, environ: dict | None = None, **settings) -> tuple[Scheduler, FakeRunnerFactory]:
        nvml = FakeNvml(list(devices))
        factory = FakeRunnerFactory(gpus=nvml)
        for model in (A, B):
            factory.plan(model, memory_bytes=RUNNER_MEMORY)
        scheduler = Scheduler(Settings(cache={"hub_dir": hub}, **settings), CATALOG, factory,
                              gpu_probe=GpuProbe(nvml, environ=environ or {}))
        built.append(scheduler)
        return scheduler, factory

    yield build
    for scheduler in built:
        await scheduler.shutdown()


async def test_a_runner_gets_exactly_its_planned_gpu_and_quantization(make):
    scheduler, factory = make(card(UUID_0, 24))
    await scheduler.load("a")
    (runner,) = factory.made(A)
    assert runner.spec.device == "cuda:0" and runner.spec.options["device"] == "cuda:0"
    assert runner.spec.env["CUDA_VISIBLE_DEVICES"] == UUID_0
    assert runner.spec.options["quantization"] == "none"  # bf16 fits on 24 GiB
    assert scheduler.info("a").device == "cuda:0"


async def test_without_a_gpu_transformers_runs_on_the_cpu_unquantized(make):
    scheduler, factory = make()  # the driver reports no GPU
    decision = await scheduler.explain("a")
    assert (decision.engine, decision.device, decision.quantization) == ("transformers", "cpu", "none")
    await scheduler.load("a")
    (runner,) = factory.made(A)
    assert runner.spec.device == "cpu" and runner.spec.env["CUDA_VISIBLE_DEVICES"] == ""
    assert runner.spec.options["quantization"] == "none" and runner.spec.options["dtype"] == "float32"


async def test_explain_returns_the_decision_the_load_then_uses(make):
    scheduler, factory = make(card(UUID_0, 12, used_gib=4))  # 8 GiB free: bf16 does not fit
    explained = await scheduler.explain("b")
    assert (explained.engine, explained.device, explained.quantization) == ("transformers", "cuda:0", "8bit")
    await scheduler.load("b")
    (runner,) = factory.made(B)
    assert (runner.spec.device, runner.spec.options["quantization"]) == ("cuda:0", "8bit")
    loaded = await scheduler.explain("b")
    assert loaded.reasons[0] == f"{B} is ready: this is the plan it was loaded with"
    assert loaded.reasons[1:] == explained.reasons


async def test_explain_of_a_model_not_downloaded_plans_from_the_catalog_sizes_and_a_load_still_fails(make):
    scheduler, factory = make(card(UUID_0, 12, used_gib=4))  # 8 GiB free: 8 GB of bf16 does not fit
    explained = await scheduler.explain("c")
    assert (explained.engine, explained.device, explained.quantization) == ("transformers", "cuda:0", "8bit")
    assert explained.fits and explained.model == C
    assert explained.reasons[0] == (f"{C} is not downloaded: this is what a load would get once it is; "
                                    f"fetch it (about 7.5 GiB in bf16) with `ocrctl pull {C}`")
    assert any("sizes from the catalog" in reason for reason in explained.reasons)
    assert any(reason.startswith("transformers unquantized would need about") for reason in explained.reasons)
    with pytest.raises(ModelNotFound, match=f"ocrctl pull {C}") as caught:
        await scheduler.load("c")
    assert caught.value.code == "model_not_downloaded" and factory.made(C) == []


async def test_the_gpu_with_more_free_memory_gets_the_model(make):
    scheduler, factory = make(card(UUID_0, 24, used_gib=20), card(UUID_1, 24))
    await scheduler.load("a")
    assert factory.made(A)[0].spec.env["CUDA_VISIBLE_DEVICES"] == UUID_1


@pytest.mark.parametrize(("environ", "settings"), [
    ({"CUDA_VISIBLE_DEVICES": "0"}, {}),
    ({}, {"gpu": {"devices": ["GPU-0000"]}}),
])
async def test_cuda_visible_devices_and_gpu_devices_limit_the_gpus(make, environ, settings):
    scheduler, factory = make(card(UUID_0, 24, used_gib=12), card(UUID_1, 24), environ=environ, **settings)
    await scheduler.load("a")
    assert factory.made(A)[0].spec.env["CUDA_VISIBLE_DEVICES"] == UUID_0


async def test_a_second_model_is_quantized_rather_than_evicting_the_first(make):
    scheduler, factory = make(card(UUID_0, 16))
    await scheduler.load("a")  # bf16, 8.5 GiB on the card: 7.5 GiB left
    await scheduler.load("b")
    assert scheduler.info("a").state == ModelState.READY
    assert factory.made(B)[0].spec.options["quantization"] == "8bit"


async def test_a_load_that_does_not_fit_evicts_an_idle_model_by_its_measured_memory(make):
    scheduler, factory = make(card(UUID_0, 16), models={B: {"quantization": "none"}})
    await scheduler.load("a")
    await scheduler.load("b")  # bf16 asked for: 9.4 GiB, 7.0 GiB usable until a goes
    assert scheduler.info("a").state == ModelState.NOT_LOADED and factory.made(A)[0].stopped
    runner_b = factory.made(B)[0]
    assert runner_b.running and runner_b.spec.options["quantization"] == "none"


async def test_a_load_that_cannot_fit_fails_saying_what_is_missing_and_what_holds_memory(make):
    scheduler, factory = make(card(UUID_0, 16), models={B: {"quantization": "none"}})
    await scheduler.load("a", pin=True)
    with pytest.raises(InsufficientMemory) as caught:
        await scheduler.load("b")
    message = caught.value.message
    assert message.startswith(f"cannot load {B}: does not fit: transformers, unquantized needs about 9.4 GiB "
                              "on cuda:0 but only 7.0 GiB is usable there; 2.4 GiB is missing")
    assert f"{A} (8.5 GiB, busy or pinned)" in message
    assert factory.made(B) == [] and scheduler.info("a").state == ModelState.READY


async def test_a_load_in_progress_holds_its_planned_memory_for_the_next_plan(make):
    scheduler, factory = make(card(UUID_0, 24), card(UUID_1, 20))
    factory.plan(A, memory_bytes=RUNNER_MEMORY, gated=True)
    loading = asyncio.create_task(scheduler.load("a"))
    runner_a = await factory.wait_started(A)
    assert runner_a.spec.device == "cuda:0"
    # NVML shows nothing of a yet; its 9.4 GiB are promised, so cuda:1 now has more room.
    decision = await scheduler.explain("b")
    assert decision.device == "cuda:1"
    runner_a.release()
    await loading


async def test_an_engine_this_host_lacks_is_refused_with_the_planners_reason(make):
    # The process launcher with ocrd's own interpreter, which has no vllm package (never installed
    # in the test venv): vLLM is unavailable, whatever Docker this host has.
    scheduler, factory = make(card(UUID_0, 24), vllm={"launcher": "process"})
    with pytest.raises(EngineUnavailable, match="vllm not used: the vllm package is not installed for "):
        await scheduler.load("a", engine="vllm")
    assert factory.made(A) == []


async def test_replicas_spread_over_the_gpus_with_room_each_planned_with_the_others_counted(make):
    scheduler, factory = make(card(UUID_0, 16), card(UUID_1, 16), models={A: {"replicas": 2}})
    info = await scheduler.load("a")
    first, second = factory.made(A)
    assert {first.spec.device, second.spec.device} == {"cuda:0", "cuda:1"}
    assert {first.spec.env["CUDA_VISIBLE_DEVICES"], second.spec.env["CUDA_VISIBLE_DEVICES"]} == {UUID_0, UUID_1}
    assert info.replica_pids == (first.fake_pid, second.fake_pid) and info.pid == first.fake_pid
    assert info.memory_bytes == 2 * RUNNER_MEMORY
    assert set(info.device.split(",")) == {"cuda:0", "cuda:1"}
    # Both count against their GPU: a third model (bf16, ~9.4 GiB) no longer fits unquantized.
    explained = await scheduler.explain("b")
    assert explained.quantization != "none"


async def test_replicas_that_do_not_fit_on_a_gpu_are_left_out_and_the_model_still_loads(make):
    scheduler, factory = make(card(UUID_0, 12), models={A: {"replicas": 3}})  # room for one
    info = await scheduler.load("a")
    assert len(factory.made(A)) == 1 and len(info.replica_pids) == 1
