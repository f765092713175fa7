"""``ReplicaSet``: several runners of one model behind one ``Runner``, with FakeRunners (the real
set, the real scheduler where it takes part).

Requests go to the replica with the fewest in flight until their response is closed; a replica
that crashes is dropped while the others serve; the last one's crash is the set's exit; a replica
that fails to start stops the others; the scheduler starts ``[models.X] replicas`` runners, and
lets that many requests run at once.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.engines import replica_count
from ocrd.core.scheduler import Scheduler
from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import RunnerSpec
from ocrd.runners.replicas import ReplicaSet
from ocrd.runners.transport import exchange
from tests.support.fake_runner import FakeRunner, FakeRunnerFactory, StartPlan

CATALOG = Catalog.load_default()


class PidRunner(FakeRunner):
    """A FakeRunner whose answers name it (its pid), so a test sees which replica answered."""

    def client(self) -> httpx.AsyncClient:
        pid = self.fake_pid
        return httpx.AsyncClient(base_url="http://fake-runner",
                                 transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"pid": pid})))


def replicas(count: int, **plan: object) -> list[FakeRunner]:
    spec = RunnerSpec(model=CATALOG.resolve("ppocr"), engine="builtin")
    return [PidRunner(spec=spec, plan=StartPlan(**plan), fake_pid=100 + n) for n in range(count)]  # type: ignore[arg-type]


async def started(runners: list[FakeRunner]) -> tuple[ReplicaSet, list[str]]:
    exits: list[str] = []
    replica_set = ReplicaSet(runners)
    await replica_set.start(lambda step: None, exits.append)
    return replica_set, exits


async def answered_by(response: httpx.Response) -> int:
    await response.aread()
    return int(response.json()["pid"])


async def test_requests_go_to_the_replica_with_the_fewest_in_flight():
    replica_set, _ = await started(replicas(3))
    client = replica_set.client()
    held = [await client.send(client.build_request("POST", "/v1/chat/completions"), stream=True)
            for _ in range(2)]  # two answers not yet read: their replicas stay busy
    third = await client.post("/v1/chat/completions")
    busy = {await answered_by(response) for response in held}
    assert len(busy) == 2 and third.json()["pid"] not in busy  # the idle one
    for response in held:
        await response.aclose()
    # All idle again: in turn, each replica once.
    answers = [(await client.post("/v1/chat/completions")).json()["pid"] for _ in range(3)]
    assert sorted(answers) == [100, 101, 102]
    await replica_set.stop(0)


async def test_the_proxys_requests_are_spread_and_counted_the_same_way():
    """``exchange`` (how the proxy sends a chat request) goes to the least busy replica too, and
    a streamed reply counts until it is closed; a whole one is done when it is read."""
    replica_set, _ = await started(replicas(3))
    client = replica_set.client()
    held = [await exchange(client, "/v1/chat/completions", b"{}", stream=True) for _ in range(2)]
    busy = {int(json.loads(await reply.aread())["pid"]) for reply in held}
    third = await exchange(client, "/v1/chat/completions", b"{}", stream=False)
    assert len(busy) == 2 and json.loads(third.content)["pid"] not in busy
    for reply in held:
        await reply.aclose()
        await reply.aclose()  # twice: counted once
    answers = [json.loads((await exchange(client, "/v1/chat/completions", b"{}", stream=False)).content)["pid"]
               for _ in range(6)]
    assert sorted(answers) == [100, 100, 101, 101, 102, 102]
    await replica_set.stop(0)


async def test_a_crashed_replica_is_dropped_and_the_others_serve_until_the_last_one_ends():
    runners = replicas(2)
    replica_set, exits = await started(runners)
    runners[0].crash("killed by signal 9")
    assert exits == [] and replica_set.replicas() == (runners[1],)
    assert replica_set.pid == runners[1].fake_pid
    answers = {(await replica_set.client().post("/v1/chat/completions")).json()["pid"] for _ in range(3)}
    assert answers == {runners[1].fake_pid}
    runners[1].crash("killed by signal 11")
    assert exits == ["killed by signal 11"]
    with pytest.raises(httpx.ConnectError):
        await replica_set.client().post("/v1/chat/completions")


async def test_a_replica_that_fails_to_start_stops_the_others_and_fails_the_load():
    good, bad = replicas(1)[0], replicas(1, error=ModelLoadFailed("no model here"))[0]
    with pytest.raises(ModelLoadFailed, match="no model here"):
        await started([good, bad])
    assert good.stops and not good.running


async def test_logs_name_their_replica():
    runners = replicas(2)
    replica_set, _ = await started(runners)
    assert await replica_set.logs() == []  # fake runners keep none; the set adds nothing of its own
    await replica_set.stop(0)
    assert all(runner.stops == [0] for runner in runners)


def test_engines_without_replicas_always_get_one():
    settings = Settings()
    assert replica_count("vllm", 4, settings) == 1 and replica_count("upstream", 4, settings) == 1
    assert replica_count("transformers", None, settings) == 1 and replica_count("transformers", 3, settings) == 3
    assert replica_count("builtin", 2, settings) == 2
    assert replica_count("builtin", None, settings) >= 1  # one per two cores


async def test_the_scheduler_starts_the_replicas_and_runs_that_many_requests_at_once():
    factory = FakeRunnerFactory()
    scheduler = Scheduler(Settings(models={"ppocr": {"replicas": 3}}), CATALOG, factory)
    try:
        info = await scheduler.load("ppocr")
        made = factory.made("builtin/ppocr")
        assert len(made) == 3 and info.replica_pids == tuple(r.fake_pid for r in made)
        assert all(r.spec.options["threads"] >= 1 for r in made)  # the cores shared out
        leases = [scheduler.acquire("ppocr") for _ in range(3)]
        held = await asyncio.wait_for(asyncio.gather(*(lease.__aenter__() for lease in leases)), 5)
        assert len(held) == 3  # three at once: one per replica
        for lease in leases:
            await lease.__aexit__(None, None, None)
        unloaded = await scheduler.unload("ppocr")
        assert unloaded.was_loaded and all(r.stops for r in made)
    finally:
        await scheduler.shutdown()
