"""The real Scheduler, driven with FakeRunner processes and a fake clock.

No test sleeps: a runner's start finishes when the test releases it, keep-alive expiry is the
fake clock moving, and "later" means a few turns of the event loop (``until``). The only real
timeouts are the few-millisecond load/drain timeouts of the tests about those timeouts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.scheduler import Scheduler
from ocrd.errors import (
    CapacityExhausted,
    Conflict,
    ModelLoadFailed,
    ModelNotReady,
    QueueFull,
    ShuttingDown,
)
from ocrd.events import Event, ModelState
from ocrd.runners.base import LoadProgress, Runner
from tests.support.fake_runner import FakeRunnerFactory

GENEROUS = 30.0  # a drain timeout the tests that expect a drain to succeed never reach


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(condition: Callable[[], bool], what: str) -> None:
    """Lets the event loop run until ``condition`` holds (a bounded number of turns, no sleep)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def answer(request: Request) -> BaseException | None:
    """The error a request ended with; fails (rather than hangs) when it is still waiting."""
    await until(request.task.done, "the request was answered")
    return request.task.exception()


async def settle() -> None:
    """Gives every runnable task its chance, to show that something does NOT happen."""
    for _ in range(50):
        await asyncio.sleep(0)


class Request:
    """One client request: takes a lease, records its turn, holds the lease until released."""

    def __init__(self, scheduler: Scheduler, model: str, *, order: list[str] | None = None,
                 tag: str = "", hold: bool = True):
        self.leased = asyncio.Event()
        self.runner: Runner | None = None
        self._release = asyncio.Event()
        if not hold:
            self._release.set()
        self._order, self._tag = order, tag
        self.task = asyncio.create_task(self._run(scheduler, model))

    async def _run(self, scheduler: Scheduler, model: str) -> None:
        async with scheduler.acquire(model) as runner:
            self.runner = runner
            if self._order is not None:
                self._order.append(self._tag)
            self.leased.set()
            await self._release.wait()

    def release(self) -> None:
        self._release.set()

    async def finish(self) -> Runner | None:
        self.release()
        await self.task
        return self.runner


@dataclass
class Harness:
    scheduler: Scheduler
    factory: FakeRunnerFactory
    clock: FakeClock
    events: list[Event] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def request(self, model: str, **kwargs: Any) -> Request:
        request = Request(self.scheduler, model, **kwargs)
        self.requests.append(request)
        return request

    def state(self, model: str) -> ModelState:
        return self.scheduler.info(model).state

    def kinds(self, model: str = "") -> list[str]:
        return [e.kind for e in self.events if not model or e.model == model]


CATALOG = Catalog([
    CatalogEntry("org/model-a", aliases=("a",), engines=("builtin",)),
    CatalogEntry("org/model-b", aliases=("b",), engines=("builtin",)),
    CatalogEntry("org/model-c", aliases=("c",), engines=("builtin",)),
])


@pytest.fixture(autouse=True)
def _no_ocrd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OCRD_")]:
        monkeypatch.delenv(name)


def _cancel_everything(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


@pytest.fixture(autouse=True)
async def _hang_guard():
    """Turns a hang (a lost wake-up, a leaked turn) into a failed test instead of a stuck run.

    Not a speed check: every test here finishes in milliseconds; this only fires on a deadlock.
    """
    loop = asyncio.get_running_loop()
    handle = loop.call_later(10, _cancel_everything, loop)
    yield
    handle.cancel()


@pytest.fixture
async def make():
    """Builds a Harness from scheduler settings (and ``models=`` per-model overrides)."""
    built: list[Harness] = []

    def build(*, models: dict[str, Any] | None = None, **scheduler: Any) -> Harness:
        scheduler.setdefault("drain_timeout", GENEROUS)
        # Settings() directly, not load_settings(): no /etc/ocrd/ocrd.toml layer in unit tests.
        settings = Settings(scheduler=scheduler, models=models or {})
        clock, factory = FakeClock(), FakeRunnerFactory()
        harness = Harness(Scheduler(settings, CATALOG, factory, clock=clock, wall_clock=clock),
                          factory, clock)
        harness.scheduler.events.add_listener(harness.events.append)
        built.append(harness)
        return harness

    yield build
    for harness in built:
        for request in harness.requests:
            request.release()
        await asyncio.gather(*(r.task for r in harness.requests), return_exceptions=True)
        await harness.scheduler.shutdown()


# --- leases and auto-load ---------------------------------------------------------------------


async def test_first_acquire_auto_loads_the_model_and_leases_its_runner(make):
    h = make()
    async with h.scheduler.acquire("a") as runner:
        assert h.factory.runners == [runner]
        assert runner.running
        info = h.scheduler.info("org/model-a")
        assert (info.state, info.in_flight, info.pid) == (ModelState.READY, 1, runner.pid)
    assert h.scheduler.info("a").in_flight == 0
    assert h.kinds() == ["model.loading", "model.ready"]


async def test_a_lease_taken_with_the_resolved_entry_is_on_the_models_one_slot(make):
    h = make()
    async with h.scheduler.acquire(h.scheduler.resolve("a")) as runner:
        assert h.scheduler.info("org/model-a").in_flight == 1
    async with h.scheduler.acquire("org/model-a") as again:
        assert again is runner
    assert h.scheduler.info("a").in_flight == 0
    assert h.factory.runners == [runner]


async def test_concurrent_acquires_during_a_load_share_one_runner_start(make):
    h = make()
    h.factory.plan("org/model-a", gated=True)
    requests = [h.request("a") for _ in range(3)]
    runner = await h.factory.wait_started("org/model-a")
    await until(lambda: h.scheduler.info("a").queued == 3, "three requests waiting for the load")
    runner.release()
    served = [await request.finish() for request in requests]
    assert served == [runner, runner, runner]
    assert h.factory.runners == [runner]


async def test_acquire_with_auto_load_off_raises_model_not_ready_until_loaded(make):
    h = make(auto_load=False)
    with pytest.raises(ModelNotReady):
        async with h.scheduler.acquire("a"):
            pass
    assert h.factory.runners == []
    await h.scheduler.load("a")
    async with h.scheduler.acquire("a") as runner:
        assert runner is h.factory.runners[0]


async def test_slow_load_of_one_model_does_not_block_requests_to_another(make):
    h = make()
    async with h.scheduler.acquire("b"):
        pass
    h.factory.plan("org/model-a", gated=True)
    waiting_for_a = h.request("a")
    runner_a = await h.factory.wait_started("org/model-a")
    async with h.scheduler.acquire("b") as runner_b:
        assert runner_b.model_id == "org/model-b"
        assert h.state("a") == ModelState.LOADING
        assert not waiting_for_a.leased.is_set()
    runner_a.release()
    assert await waiting_for_a.finish() is runner_a


# --- unload -----------------------------------------------------------------------------------


async def test_unload_waits_for_the_in_flight_lease_and_stops_the_runner_after_it(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    runner = holder.runner
    unloading = asyncio.create_task(h.scheduler.unload("a"))
    await until(lambda: h.state("a") == ModelState.UNLOADING, "unload started")
    await settle()
    assert not unloading.done() and not runner.stopped
    await holder.finish()
    result = await unloading
    assert (result.model, result.was_loaded) == ("org/model-a", True)
    assert runner.stops == [GENEROUS]
    assert h.state("a") == ModelState.NOT_LOADED
    assert h.kinds()[-2:] == ["model.unloading", "model.unloaded"]


async def test_unload_outlasting_drain_timeout_is_refused_and_model_stays_ready(make):
    h = make(drain_timeout=0.005)
    holder = h.request("a")
    await holder.leased.wait()
    with pytest.raises(Conflict, match="still serving 1 request"):
        await h.scheduler.unload("a")
    assert h.state("a") == ModelState.READY
    assert not holder.runner.stopped
    await holder.finish()
    async with h.scheduler.acquire("a") as runner:
        assert runner is holder.runner
    assert len(h.factory.runners) == 1


async def test_unload_completes_even_when_its_caller_goes_away(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    unloading = asyncio.create_task(h.scheduler.unload("a"))
    await until(lambda: h.state("a") == ModelState.UNLOADING, "unload started")
    unloading.cancel()  # e.g. the gRPC client hung up
    await holder.finish()
    await until(lambda: h.state("a") == ModelState.NOT_LOADED, "unload finished")
    assert holder.runner.stopped


async def test_runner_dying_during_an_unload_does_not_start_a_new_one_before_it_ends(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    unloading = asyncio.create_task(h.scheduler.unload("a"))
    await until(lambda: h.state("a") == ModelState.UNLOADING, "unload started")
    holder.runner.crash("segfault")
    next_request = h.request("a")
    await settle()
    assert h.state("a") == ModelState.UNLOADING and len(h.factory.runners) == 1
    await holder.finish()
    await unloading
    assert await next_request.finish() is h.factory.runners[1]


async def test_unload_of_a_failed_model_resets_it_to_not_loaded(make):
    h = make()
    h.factory.plan("org/model-a", error=ModelLoadFailed("no weights"))
    with pytest.raises(ModelLoadFailed):
        await h.scheduler.load("a")
    result = await h.scheduler.unload("a")
    assert not result.was_loaded
    assert h.state("a") == ModelState.NOT_LOADED


# --- keep-alive -------------------------------------------------------------------------------


async def test_idle_model_is_reaped_after_its_keep_alive_and_not_before(make):
    h = make(keep_alive=60)
    async with h.scheduler.acquire("a") as runner:
        pass
    h.clock.advance(59)
    assert await h.scheduler.reap_idle() == []
    assert h.state("a") == ModelState.READY
    h.clock.advance(1)
    assert await h.scheduler.reap_idle() == ["org/model-a"]
    assert h.state("a") == ModelState.NOT_LOADED
    assert runner.stopped


async def test_each_request_restarts_the_keep_alive(make):
    h = make(keep_alive=60)
    async with h.scheduler.acquire("a"):
        pass
    h.clock.advance(50)
    async with h.scheduler.acquire("a"):
        pass
    h.clock.advance(50)
    assert await h.scheduler.reap_idle() == []


async def test_leased_model_is_not_reaped_however_long_the_request_runs(make):
    h = make(keep_alive=60)
    holder = h.request("a")
    await holder.leased.wait()
    h.clock.advance(3600)
    assert await h.scheduler.reap_idle() == []
    assert not holder.runner.stopped


async def test_pinned_model_is_never_reaped(make):
    h = make(keep_alive=60, models={"a": {"pinned": True}})
    await h.scheduler.load("a")
    h.clock.advance(10**6)
    assert await h.scheduler.reap_idle() == []
    assert h.scheduler.info("a").pinned


async def test_per_model_keep_alive_overrides_the_default(make):
    h = make(keep_alive=300, models={"org/model-b": {"keep_alive": "10s"}})
    await h.scheduler.load("a")
    await h.scheduler.load("b")
    h.clock.advance(10)
    assert await h.scheduler.reap_idle() == ["org/model-b"]
    assert h.state("a") == ModelState.READY


async def test_keep_alive_zero_unloads_right_after_the_request(make):
    h = make(keep_alive=0)
    async with h.scheduler.acquire("a") as runner:
        pass
    await until(lambda: h.state("a") == ModelState.NOT_LOADED, "unloaded after use")
    assert runner.stopped


async def test_a_model_loaded_again_has_no_last_use_until_a_request_ends_on_it(make):
    # Used, unloaded, loaded again: `ocrctl ps` says "never", not the old runner's "2m45s ago".
    h = make()
    await h.request("a").finish()
    assert h.scheduler.info("a").last_used is not None
    await h.scheduler.unload("a")
    await h.scheduler.load("a")
    assert h.scheduler.info("a").last_used is None
    await h.request("a").finish()
    assert h.scheduler.info("a").last_used is not None


async def test_load_time_keep_alive_and_pin_last_until_unload(make):
    h = make(keep_alive=300)
    await h.scheduler.load("a", keep_alive=5)
    assert h.scheduler.info("a").keep_alive == 5
    h.clock.advance(5)
    assert await h.scheduler.reap_idle() == ["org/model-a"]
    assert h.scheduler.info("a").keep_alive == 300  # the override went with the unload

    info = await h.scheduler.load("a", pin=True)
    assert info.pinned
    h.clock.advance(10**6)
    assert await h.scheduler.reap_idle() == []
    await h.scheduler.unload("a")
    assert not h.scheduler.info("a").pinned


async def test_pin_given_while_the_model_is_unloading_survives_that_unload(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    unloading = asyncio.create_task(h.scheduler.unload("a"))
    await until(lambda: h.state("a") == ModelState.UNLOADING, "unload started")
    pinning = asyncio.create_task(h.scheduler.load("a", pin=True))
    await holder.finish()
    await unloading
    assert (await pinning).pinned
    assert h.scheduler.info("a").state == ModelState.READY


# --- the bounded queue ------------------------------------------------------------------------


async def test_request_beyond_the_queue_size_is_rejected_with_retry_after(make):
    h = make(queue_size=2)
    holder = h.request("a")
    await holder.leased.wait()
    h.request("a"), h.request("a")
    await until(lambda: h.scheduler.info("a").queued == 2, "two requests queued")
    refused = await answer(h.request("a"))
    assert isinstance(refused, QueueFull)
    assert refused.retry_after == 3  # the two waiting and this one, at the starting pace of 1 s
    assert refused.http_headers() == {"Retry-After": "3"}
    assert h.kinds("org/model-a")[-1] == "request.rejected"
    assert h.scheduler.info("a").queued == 2


@pytest.mark.parametrize(("durations", "queue_size", "retry_after"), [
    # The pace starts at 1 s and moves a fifth of the way to each finished request's duration:
    ([], 2, 3),  # 1 s x (2 waiting + this one)
    ([10.0], 2, 8),  # pace 0.8 + 2 = 2.8 s; x 3 = 8.4
    ([10.0, 30.0, 30.0], 4, 63),  # pace 2.8 -> 8.24 -> 12.592 s; x 5 = 62.96
    ([4.0, 0.5], 1, 3),  # pace 1.6 -> 1.38 s; x 2 = 2.76
    ([0.001] * 20, 0, 1),  # pace -> 0.02 s (each request counts as at least 10 ms); never under 1
])  # fmt: skip
async def test_retry_after_is_the_waiting_requests_and_this_one_at_the_recent_pace(
        make, durations, queue_size, retry_after):
    h = make(queue_size=queue_size)
    for seconds in durations:  # requests that took these many seconds on the scheduler's clock
        done = h.request("a")
        await done.leased.wait()
        h.clock.advance(seconds)
        await done.finish()
    holder = h.request("a")
    await holder.leased.wait()
    for _ in range(queue_size):
        h.request("a")
    await until(lambda: h.scheduler.info("a").queued == queue_size, "the queue full")
    refused = await answer(h.request("a"))
    assert isinstance(refused, QueueFull)
    assert refused.http_headers() == {"Retry-After": str(retry_after)}


async def test_queued_requests_run_in_arrival_order_once_the_holder_releases(make):
    h = make(queue_size=3)
    order: list[str] = []
    holder = h.request("a", order=order, tag="holder")
    await holder.leased.wait()
    queued = []
    for tag in ("first", "second", "third"):
        queued.append(h.request("a", order=order, tag=tag, hold=False))
        await until(lambda: h.scheduler.info("a").queued == len(queued), f"{tag} queued")
    assert order == ["holder"]
    await holder.finish()
    await asyncio.gather(*(r.task for r in queued))
    assert order == ["holder", "first", "second", "third"]


async def test_queue_size_zero_serves_one_request_and_refuses_the_rest(make):
    h = make(queue_size=0)
    holder = h.request("a")
    await holder.leased.wait()
    assert isinstance(await answer(h.request("a")), QueueFull)
    await holder.finish()
    async with h.scheduler.acquire("a"):
        pass


async def test_cancelled_queued_request_gives_back_its_place_and_turn(make):
    h = make(queue_size=1)
    holder = h.request("a")
    await holder.leased.wait()
    doomed = h.request("a")
    await until(lambda: h.scheduler.info("a").queued == 1, "one request queued")
    doomed.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed.task
    assert h.scheduler.info("a").queued == 0
    successor = h.request("a")  # would be QueueFull had the place leaked
    await until(lambda: h.scheduler.info("a").queued == 1, "successor queued")
    await holder.finish()
    assert await successor.finish() is holder.runner
    assert h.scheduler.info("a").queued == 0


async def test_cancelled_request_does_not_cancel_the_load_it_was_waiting_for(make):
    h = make()
    h.factory.plan("org/model-a", gated=True)
    leaving, staying = h.request("a"), h.request("a")
    runner = await h.factory.wait_started("org/model-a")
    await until(lambda: h.scheduler.info("a").queued == 2, "both waiting for the load")
    leaving.task.cancel()
    await until(lambda: h.scheduler.info("a").queued == 1, "the cancelled one left")
    runner.release()
    assert await staying.finish() is runner
    assert leaving.task.cancelled()
    assert not runner.stopped and h.factory.runners == [runner]


# --- failures ---------------------------------------------------------------------------------


async def test_runner_crash_marks_the_model_failed_and_the_next_request_starts_a_new_runner(make):
    h = make()
    async with h.scheduler.acquire("a") as first:
        pass
    first.crash("killed by signal 9 (out of memory)")
    info = h.scheduler.info("a")
    assert info.state == ModelState.FAILED
    assert "out of memory" in info.error
    assert h.kinds()[-1] == "model.failed"
    async with h.scheduler.acquire("a") as second:
        assert second is not first and second.running
    assert h.factory.made("org/model-a") == [first, second]


async def test_request_queued_behind_a_runner_that_crashed_gets_a_new_runner(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    queued = h.request("a", hold=False)
    await until(lambda: h.scheduler.info("a").queued == 1, "one request queued")
    holder.runner.crash("segfault")
    await holder.finish()  # its request failed against the dead runner; the lease ends anyway
    assert await answer(queued) is None
    assert queued.runner is h.factory.made("org/model-a")[1] and queued.runner.running


async def test_load_failure_reaches_every_waiter_and_the_next_request_retries(make):
    h = make()
    h.factory.plan("org/model-a", gated=True, error=ModelLoadFailed("CUDA out of memory"))
    requests = [h.request("a") for _ in range(3)]
    runner = await h.factory.wait_started("org/model-a")
    await until(lambda: h.scheduler.info("a").queued == 3, "three requests waiting")
    runner.release()
    outcomes = [await answer(request) for request in requests]
    assert all(isinstance(o, ModelLoadFailed) for o in outcomes)
    assert {str(o) for o in outcomes} == {"CUDA out of memory"}
    assert len(h.factory.runners) == 1  # one load, shared, not one per waiter
    assert runner.stops == [0]
    info = h.scheduler.info("a")
    assert (info.state, info.error) == (ModelState.FAILED, "CUDA out of memory")

    h.factory.plan("org/model-a")
    async with h.scheduler.acquire("a") as retried:
        assert retried is not runner and retried.running


async def test_unexpected_start_exception_becomes_model_load_failed(make):
    h = make()
    h.factory.plan("org/model-a", error=RuntimeError("weights file truncated"))
    with pytest.raises(ModelLoadFailed, match="weights file truncated"):
        await h.scheduler.load("a")


async def test_load_outlasting_load_timeout_fails_and_stops_the_runner(make):
    h = make(load_timeout=0.005)
    h.factory.plan("org/model-a", hang=True)
    with pytest.raises(ModelLoadFailed, match="load_timeout"):
        async with h.scheduler.acquire("a"):
            pass
    assert h.factory.runners[0].stops == [0]
    assert h.state("a") == ModelState.FAILED


# --- load_progress ----------------------------------------------------------------------------


async def test_load_progress_yields_loading_and_progress_then_ready(make):
    h = make()
    steps = (LoadProgress("download", 0.5, "fetching weights"), LoadProgress("warmup", 0.9))
    h.factory.plan("org/model-a", progress=steps)
    events = [event async for event in h.scheduler.load_progress("a")]
    assert [e.kind for e in events] == [
        "model.loading", "model.progress", "model.progress", "model.ready"]
    assert [(e.stage, e.progress) for e in events[1:3]] == [("download", 0.5), ("warmup", 0.9)]
    assert events[-1].state == ModelState.READY
    assert h.state("a") == ModelState.READY


async def test_load_progress_of_a_ready_model_yields_only_ready(make):
    h = make()
    await h.scheduler.load("a")
    events = [event async for event in h.scheduler.load_progress("a")]
    assert [e.kind for e in events] == ["model.ready"]
    assert len(h.factory.runners) == 1


async def test_load_progress_raises_the_load_error(make):
    h = make()
    h.factory.plan("org/model-a", error=ModelLoadFailed("unsupported architecture"))
    seen = []
    with pytest.raises(ModelLoadFailed, match="unsupported architecture"):
        async for event in h.scheduler.load_progress("a"):
            seen.append(event.kind)
    assert seen == ["model.loading"]


async def test_load_continues_when_the_progress_reader_goes_away(make):
    h = make()
    h.factory.plan("org/model-a", gated=True)
    progress = h.scheduler.load_progress("a")
    assert (await anext(progress)).kind == "model.loading"
    await progress.aclose()
    runner = await h.factory.wait_started("org/model-a")
    runner.release()
    await until(lambda: h.state("a") == ModelState.READY, "load finished")
    assert not runner.stopped


# --- capacity ---------------------------------------------------------------------------------


async def test_loading_beyond_max_loaded_models_evicts_the_least_recently_used_idle_model(make):
    h = make(max_loaded_models=2)
    await h.scheduler.load("a")
    h.clock.advance(1)
    await h.scheduler.load("b")
    h.clock.advance(1)
    async with h.scheduler.acquire("a"):  # a is now more recently used than b
        pass
    await h.scheduler.load("c")
    states = [h.state(m) for m in "abc"]
    assert states == [ModelState.READY, ModelState.NOT_LOADED, ModelState.READY]
    assert h.factory.made("org/model-b")[0].stopped
    assert not h.factory.made("org/model-a")[0].stopped


async def test_capacity_exhausted_when_the_loaded_model_is_leased(make):
    h = make(max_loaded_models=1)
    holder = h.request("a")
    await holder.leased.wait()
    refused = await answer(h.request("b"))
    assert isinstance(refused, CapacityExhausted) and "org/model-a" in str(refused)
    assert h.state("a") == ModelState.READY and not holder.runner.stopped


async def test_capacity_exhausted_when_the_loaded_model_is_pinned(make):
    h = make(max_loaded_models=1)
    await h.scheduler.load("a", pin=True)
    with pytest.raises(CapacityExhausted):
        await h.scheduler.load("b")
    assert h.state("a") == ModelState.READY
    assert h.factory.made("org/model-b") == []


async def test_a_model_still_loading_is_not_evicted(make):
    h = make(max_loaded_models=1)
    h.factory.plan("org/model-a", gated=True)
    loading_a = asyncio.create_task(h.scheduler.load("a"))  # an explicit load: nobody waits on a
    runner_a = await h.factory.wait_started("org/model-a")
    with pytest.raises(CapacityExhausted):
        await h.scheduler.load("b")
    runner_a.release()
    assert (await loading_a).state == ModelState.READY
    assert h.factory.made("org/model-a") == [runner_a] and not runner_a.stopped


# --- shutdown ---------------------------------------------------------------------------------


async def test_shutdown_stops_every_runner_and_refuses_later_requests(make):
    h = make()
    await h.scheduler.load("a")
    await h.scheduler.load("b")
    await h.scheduler.shutdown()
    assert all(runner.stopped for runner in h.factory.runners)
    assert [h.state(m) for m in "ab"] == [ModelState.NOT_LOADED] * 2
    assert "daemon.stopping" in h.kinds()
    with pytest.raises(ShuttingDown):
        async with h.scheduler.acquire("a"):
            pass
    with pytest.raises(ShuttingDown):
        await h.scheduler.load("c")


async def test_shutdown_waits_for_in_flight_requests_before_stopping_their_runner(make):
    h = make()
    holder = h.request("a")
    await holder.leased.wait()
    stopping = asyncio.create_task(h.scheduler.shutdown())
    await settle()
    assert not stopping.done() and not holder.runner.stopped
    await holder.finish()
    await stopping
    assert holder.runner.stopped


async def test_shutdown_during_a_load_fails_its_waiters_and_stops_the_runner(make):
    h = make()
    h.factory.plan("org/model-a", gated=True)
    waiting = h.request("a")
    runner = await h.factory.wait_started("org/model-a")
    await h.scheduler.shutdown()
    with pytest.raises(ShuttingDown):
        await waiting.task
    assert runner.stopped
    assert h.state("a") == ModelState.NOT_LOADED


async def test_shutdown_right_after_a_load_began_still_wakes_its_waiters(make):
    h = make()
    waiting = h.request("a")
    await asyncio.sleep(0)  # the request began the load; the load's own task has not run yet
    await h.scheduler.shutdown()
    async with asyncio.timeout(5):  # a safety net against a hang, not a speed check
        with pytest.raises(ShuttingDown):
            await waiting.task


# --- events -----------------------------------------------------------------------------------


async def test_every_transition_is_an_event_with_increasing_sequence_numbers(make):
    h = make()
    await h.scheduler.load("a")
    await h.scheduler.unload("a")
    assert h.kinds() == ["model.loading", "model.ready", "model.unloading", "model.unloaded"]
    sequences = [e.sequence for e in h.events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert all(e.model == "org/model-a" for e in h.events)


# --- requests at once ---------------------------------------------------------------------------


async def test_a_model_allowed_three_requests_at_once_runs_three_on_one_runner_and_queues_the_rest(make):
    h = make(queue_size=1, models={"a": {"max_concurrent_requests": 3}})
    running = [h.request("a") for _ in range(3)]
    for request in running:
        await request.leased.wait()
    assert len({id(r.runner) for r in running}) == 1 and len(h.factory.made("org/model-a")) == 1
    assert h.scheduler.info("a").in_flight == 3
    fourth = h.request("a")
    await until(lambda: h.scheduler.info("a").queued == 1, "the fourth request queued")
    assert not fourth.leased.is_set()
    assert isinstance(await answer(h.request("a")), QueueFull)  # queue_size 1 is taken
    await running[0].finish()
    await fourth.leased.wait()
    assert fourth.runner is running[1].runner


async def test_lowering_max_concurrent_requests_on_reload_admits_nobody_until_below_it(make):
    h = make(queue_size=4, models={"a": {"max_concurrent_requests": 3}})
    running = [h.request("a") for _ in range(3)]
    for request in running:
        await request.leased.wait()
    h.scheduler.apply_settings(Settings(scheduler={"queue_size": 4, "drain_timeout": GENEROUS},
                                        models={"a": {"max_concurrent_requests": 1}}))
    waiting = h.request("a")
    await until(lambda: h.scheduler.info("a").queued == 1, "a request queued")
    await running[0].finish()
    await running[1].finish()
    await settle()
    assert not waiting.leased.is_set()  # one still runs: the new limit is 1
    await running[2].finish()
    await waiting.leased.wait()
