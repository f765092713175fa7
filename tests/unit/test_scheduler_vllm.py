"""The real Scheduler with vLLM models: runners adopted after a restart, restarts with backoff after
a crash, and the runners it counts as its own (what `ocrctl cleanup` spares).

Runners are FakeRunners (tests/support/fake_runner.py); Docker's status is the one this host has
(reachable, no NVIDIA runtime), stated instead of asked, with ``vllm.device = "cpu"``, so vLLM is
available and planned on the CPU. Backoffs are event-loop time and tiny; nothing asserts on time:
the tests wait for events and count runners.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.scheduler import Scheduler
from ocrd.errors import Conflict, ModelLoadFailed
from ocrd.events import ModelState
from ocrd.planning.planner import Decision
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.fake_runner import FakeRunner, FakeRunnerFactory, StartPlan
from tests.support.sized_models import cache_model, vlm_tensors

MODEL = "org/vllm-vlm"
DOCKER_AS_THIS_HOST_HAS_IT = DockerStatus(True, version="20.10.24", runtimes=("runc",))
CATALOG = Catalog([CatalogEntry(MODEL, aliases=("v",), engines=("vllm",))])
MIB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
async def _hang_guard():
    loop = asyncio.get_running_loop()
    handle = loop.call_later(20, lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
    yield
    handle.cancel()


@pytest.fixture
async def make(tmp_path: Path):
    cache_model(tmp_path, MODEL, vlm_tensors(vision=64 * MIB, embeddings=64 * MIB, linear=256 * MIB))
    built: list[Scheduler] = []

    def build(**vllm) -> tuple[Scheduler, FakeRunnerFactory, Clock]:
        factory, clock = FakeRunnerFactory(), Clock()
        settings = Settings(cache={"hub_dir": tmp_path}, vllm={"device": "cpu", **vllm})
        models = ModelDirectory(CATALOG, settings, docker_status=lambda: DOCKER_AS_THIS_HOST_HAS_IT)
        scheduler = Scheduler(settings, models, factory, clock=clock)
        built.append(scheduler)
        return scheduler, factory, clock

    yield build
    for scheduler in built:
        await scheduler.shutdown()


async def failed_events(scheduler: Scheduler, count: int) -> list[str]:
    """The messages of the next ``count`` model.failed events."""
    subscription = scheduler.events.subscribe(MODEL)
    messages = []
    while len(messages) < count:
        event = await subscription.next()
        if event.kind == "model.failed":
            messages.append(event.message)
    return messages


async def ready_runner(scheduler: Scheduler, factory: FakeRunnerFactory, count: int) -> FakeRunner:
    """The ``count``-th runner, once the model is ready with it."""
    runner = await factory.wait_started(MODEL, count)
    while scheduler.info(MODEL).state != ModelState.READY or not runner.running:
        await asyncio.sleep(0.001)
    return runner


# --- restarts after a crash -----------------------------------------------------------------------


async def test_without_restart_attempts_a_crashed_vllm_model_stays_failed_with_the_reason(make):
    scheduler, factory, _ = make()
    await scheduler.load(MODEL)
    events = asyncio.ensure_future(failed_events(scheduler, 1))
    await asyncio.sleep(0)
    factory.made(MODEL)[0].crash("container exited with code 17: EngineCore died")
    assert await events == ["runner exited: container exited with code 17: EngineCore died"]
    info = scheduler.info(MODEL)
    assert info.state == ModelState.FAILED
    assert info.error == "runner exited: container exited with code 17: EngineCore died"
    assert len(factory.made(MODEL)) == 1


async def test_a_crashed_vllm_model_is_restarted_with_doubling_backoff_until_the_attempts_are_spent(make):
    scheduler, factory, _ = make(restart_attempts=2, restart_backoff=0.01)
    await scheduler.load(MODEL)
    messages = []
    for restart in (1, 2):
        events = asyncio.ensure_future(failed_events(scheduler, 2))
        await asyncio.sleep(0)
        factory.made(MODEL)[restart - 1].crash("container exited with code 17")
        messages += await events
        await ready_runner(scheduler, factory, restart + 1)  # the restart's runner serves
    assert messages == [
        "runner exited: container exited with code 17",
        "restarting in 0.01s (restart 1 of 2, vllm.restart_attempts)",
        "runner exited: container exited with code 17",
        "restarting in 0.02s (restart 2 of 2, vllm.restart_attempts)",
    ]
    events = asyncio.ensure_future(failed_events(scheduler, 2))
    await asyncio.sleep(0)
    factory.made(MODEL)[2].crash("container exited with code 17")
    assert (await events)[1] == "not restarted: 2 restart(s) in a row already (vllm.restart_attempts)"
    assert scheduler.info(MODEL).state == ModelState.FAILED and len(factory.made(MODEL)) == 3

    # A person's load starts afresh, and so does the count.
    await scheduler.load(MODEL)
    events = asyncio.ensure_future(failed_events(scheduler, 2))
    await asyncio.sleep(0)
    factory.made(MODEL)[3].crash("container exited with code 17")
    assert (await events)[1] == "restarting in 0.01s (restart 1 of 2, vllm.restart_attempts)"
    await ready_runner(scheduler, factory, 5)


async def test_a_runner_that_stayed_up_longer_than_the_longest_backoff_starts_the_count_over(make):
    scheduler, factory, clock = make(restart_attempts=1, restart_backoff=0.01)
    await scheduler.load(MODEL)
    factory.made(MODEL)[0].crash()
    await ready_runner(scheduler, factory, 2)
    clock.now += 60  # up for a minute: longer than 0.01 x 2^1
    events = asyncio.ensure_future(failed_events(scheduler, 2))
    await asyncio.sleep(0)
    factory.made(MODEL)[1].crash()
    assert (await events)[1] == "restarting in 0.01s (restart 1 of 1, vllm.restart_attempts)"
    await ready_runner(scheduler, factory, 3)


async def test_a_restart_that_fails_to_load_is_retried_with_the_next_backoff(make):
    scheduler, factory, _ = make(restart_attempts=2, restart_backoff=0.01)
    await scheduler.load(MODEL)
    factory.plan(MODEL, error=ModelLoadFailed("the image is gone"))
    events = asyncio.ensure_future(failed_events(scheduler, 5))
    await asyncio.sleep(0)
    factory.made(MODEL)[0].crash()
    assert (await events)[1:] == [
        "restarting in 0.01s (restart 1 of 2, vllm.restart_attempts)",
        "the image is gone",
        "restarting in 0.02s (restart 2 of 2, vllm.restart_attempts)",
        "the image is gone",
    ]
    assert scheduler.info(MODEL).state == ModelState.FAILED and len(factory.made(MODEL)) == 3


async def test_unloading_a_failed_model_cancels_its_pending_restart(make):
    scheduler, factory, _ = make(restart_attempts=1, restart_backoff=0.05)
    await scheduler.load(MODEL)
    events = asyncio.ensure_future(failed_events(scheduler, 2))
    await asyncio.sleep(0)
    factory.made(MODEL)[0].crash()
    await events
    await scheduler.unload(MODEL)
    await asyncio.sleep(0.1)  # past the backoff: the restart found the model unloaded
    assert scheduler.info(MODEL).state == ModelState.NOT_LOADED and len(factory.made(MODEL)) == 1


# --- adoption -------------------------------------------------------------------------------------


def adopted_runner(plan: StartPlan | None = None) -> FakeRunner:
    spec = RunnerSpec(model=CATALOG.resolve(MODEL), engine="vllm", device="cpu",
                      options={"labels": {"ocrd.device": "cpu"}})
    return FakeRunner(spec=spec, plan=plan or StartPlan(), fake_pid=4242)


def adopted_decision() -> Decision:
    return Decision(model=MODEL, engine="vllm", device="cpu", quantization="none",
                    gpu_memory_utilization=0.0, estimated_bytes=0,
                    reasons=("adopted the running container ocrd-x after a restart",), fits=True)


async def test_an_adopted_runner_is_ready_without_a_load_and_its_keep_alive_starts_now(make):
    scheduler, factory, clock = make()
    runner = adopted_runner()
    info = await scheduler.adopt(runner, adopted_decision(), "container ocrd-x")
    assert (info.state, info.engine, info.device, info.pid) == (ModelState.READY, "vllm", "cpu", 4242)
    assert factory.made(MODEL) == []  # nothing was started
    assert scheduler.live_runners() == [runner]
    explained = await scheduler.explain(MODEL)
    assert "adopted the running container ocrd-x after a restart" in explained.reasons
    clock.now += 301  # the default keep-alive, counted from the adoption
    assert await scheduler.reap_idle() == [MODEL]
    assert runner.stops and scheduler.live_runners() == []


async def test_an_adopted_runner_that_does_not_answer_leaves_the_model_failed_with_why(make):
    scheduler, _, _ = make()
    runner = adopted_runner(StartPlan(error=ModelLoadFailed("the container does not answer /health")))
    info = await scheduler.adopt(runner, adopted_decision(), "container ocrd-x")
    assert (info.state, info.error) == (ModelState.FAILED, "the container does not answer /health")
    assert runner.stops  # stopped: its container is removed, nothing left behind


async def test_a_model_already_loaded_is_not_adopted_twice(make):
    scheduler, factory, _ = make()
    await scheduler.load(MODEL)
    second = adopted_runner()
    with pytest.raises(Conflict, match="already ready; not adopting container ocrd-y"):
        await scheduler.adopt(second, adopted_decision(), "container ocrd-y")
    assert second.stops and scheduler.live_runners() == factory.made(MODEL)


async def test_a_runner_still_starting_is_among_the_live_runners(make):
    scheduler, factory, _ = make()
    factory.plan(MODEL, gated=True)
    loading = asyncio.ensure_future(scheduler.load(MODEL))
    runner = await factory.wait_started(MODEL)
    assert scheduler.live_runners() == [runner]  # cleanup must not take its container for an orphan
    runner.release()
    await loading
    assert scheduler.live_runners() == [runner]


async def test_a_vllm_model_takes_vllm_max_concurrent_requests_at_once_to_let_vllm_batch(make):
    scheduler, factory, _ = make(max_concurrent_requests=4)
    held = [asyncio.Event() for _ in range(5)]
    leased = [asyncio.Event() for _ in range(5)]

    async def request(number: int) -> None:
        async with scheduler.acquire(MODEL):
            leased[number].set()
            await held[number].wait()

    tasks = [asyncio.create_task(request(number)) for number in range(5)]
    for got in leased[:4]:
        await got.wait()
    assert scheduler.info(MODEL).in_flight == 4 and len(factory.made(MODEL)) == 1
    for _ in range(50):
        await asyncio.sleep(0)
    assert not leased[4].is_set() and scheduler.info(MODEL).queued == 1
    held[0].set()
    await leased[4].wait()
    for release in held:
        release.set()
    await asyncio.gather(*tasks)
