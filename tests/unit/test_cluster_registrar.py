"""ocrd.cluster.registrar: the real Registrar against ``FakeRouter``, an in-process stand-in for
vllm-router's worker API that keeps its list the way 0.1.17 was measured to (one entry per URL; a
second POST of a listed URL adds a second routing entry; DELETE of an unlisted URL: not found).
tests/integration/test_router.py runs the same against the real router binary."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

import pytest

from ocrd.cluster.registrar import Registrar, servable_names
from ocrd.cluster.router_api import Worker
from ocrd.config.cluster import ClusterSettings
from ocrd.errors import RouterUnavailable

NODE = "http://10.0.0.5:8000"
ROUTER = "http://router:30000"


@dataclass(frozen=True)
class Model:
    id: str
    aliases: tuple[str, ...] = ()


class FakeRouter:
    """What a vllm-router's worker API does with ocrd's calls, in process; ``down``: every call
    fails as an unreachable router's would; ``hang``: every call waits for good."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url, self.timeout = base_url, timeout
        self.entries: Counter[tuple[str, str]] = Counter()  # (url, model) -> routing entries
        self.calls: list[tuple[str, str]] = []
        self.down = False
        self.hang = False
        self.refuse_add = False
        self.closed = False

    async def _call(self, what: str, url: str = "") -> None:
        self.calls.append((what, url))
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise RouterUnavailable(f"the router at {self.base_url} did not answer {what}: ConnectError")

    async def workers(self) -> list[Worker]:
        await self._call("GET")
        return [Worker(url, model, True) for url, model in dict.fromkeys(self.entries)]

    async def add(self, url: str, model: str) -> None:
        await self._call("POST", url)
        if self.refuse_add:
            raise RouterUnavailable(f"the router at {self.base_url} answered POST /workers with 400")
        self.entries[(url, model)] += 1

    async def remove(self, url: str) -> bool:
        await self._call("DELETE", url)
        listed = [key for key in self.entries if key[0] == url]
        for key in listed:
            del self.entries[key]
        return bool(listed)

    async def aclose(self) -> None:
        self.closed = True

    def urls(self) -> dict[str, str]:
        return {url: model for url, model in self.entries}


class Node:
    """A Registrar with settings, models and readiness the test changes as it goes."""

    def __init__(self, **cluster: object):
        self.cluster = ClusterSettings(**{"router_url": ROUTER, "advertise_url": NODE, **cluster})
        self.models = [Model("builtin/ppocr", ("ppocr",)), Model("builtin/tesseract", ("tesseract",))]
        self.ready = True
        self.routers: dict[str, FakeRouter] = {}
        self.registrar = Registrar(lambda: self.cluster, lambda: "http://0.0.0.0:8000",
                                   lambda: self.models, lambda: self.ready, api=self._router)

    def _router(self, base_url: str, timeout: float) -> FakeRouter:
        self.routers.setdefault(base_url, FakeRouter(base_url, timeout))
        router = self.routers[base_url]
        router.timeout = timeout
        return router

    @property
    def router(self) -> FakeRouter:
        return self.routers[ROUTER]


EVERY_NAME = {
    f"{NODE}/cluster/builtin--ppocr": "builtin/ppocr", f"{NODE}/cluster/ppocr": "ppocr",
    f"{NODE}/cluster/builtin--tesseract": "builtin/tesseract", f"{NODE}/cluster/tesseract": "tesseract",
}


def test_every_id_and_alias_is_a_name_to_register_once():
    models = [Model("builtin/ppocr", ("ppocr",)), Model("org/x", ("x", "ppocr"))]
    assert servable_names(models) == ["builtin/ppocr", "ppocr", "org/x", "x"]


async def test_each_name_is_registered_at_its_own_url_once_the_start_up_loads_are_done():
    node = Node()
    node.ready = False
    await node.registrar.sync()
    assert node.router.calls == []  # the router would send requests that wait for a load

    node.ready = True
    await node.registrar.sync()
    assert node.router.urls() == EVERY_NAME


async def test_a_round_with_nothing_changed_only_reads_the_list():
    node = Node()
    await node.registrar.sync()
    node.router.calls.clear()
    await node.registrar.sync()
    # Never a second POST of a listed URL: the router would route to it twice as often.
    assert node.router.calls == [("GET", "")]
    assert set(node.router.entries.values()) == {1}


async def test_a_router_that_forgot_the_node_gets_every_name_again(caplog):
    node = Node()
    await node.registrar.sync()
    node.router.entries.clear()  # the router restarted
    with caplog.at_level(logging.WARNING, logger="ocrd.cluster"):
        await node.registrar.sync()
    assert node.router.urls() == EVERY_NAME
    assert "no longer lists 4 of this node's model names" in caplog.text


async def test_the_first_round_replaces_what_a_previous_run_left_and_leaves_other_nodes_alone():
    node = Node()
    router = node._router(ROUTER, 3.0)
    left = {f"{NODE}/cluster/ppocr": "ppocr", f"{NODE}/cluster/gone--model": "gone/model",
            "http://10.0.0.6:8000/cluster/ppocr": "ppocr"}
    for url, model in left.items():
        router.entries[(url, model)] = 1

    await node.registrar.sync()

    assert node.router.urls() == {**EVERY_NAME, "http://10.0.0.6:8000/cluster/ppocr": "ppocr"}
    assert ("DELETE", f"{NODE}/cluster/ppocr") in router.calls  # replaced, not posted twice
    assert ("DELETE", f"{NODE}/cluster/gone--model") in router.calls
    assert set(router.entries.values()) == {1}


async def test_a_model_no_longer_served_is_withdrawn():
    node = Node()
    await node.registrar.sync()
    node.models = node.models[:1]
    await node.registrar.sync()
    assert node.router.urls() == {f"{NODE}/cluster/builtin--ppocr": "builtin/ppocr",
                                  f"{NODE}/cluster/ppocr": "ppocr"}


async def test_a_router_that_is_down_costs_one_warning_and_is_tried_again(caplog):
    node = Node()
    node._router(ROUTER, 3.0).down = True
    with caplog.at_level(logging.INFO, logger="ocrd.cluster"):
        for _ in range(3):
            await node.registrar.sync()
    assert caplog.text.count("did not answer GET: ConnectError; registration retried every 10s") == 1

    node.router.down = False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ocrd.cluster"):
        await node.registrar.sync()
    assert node.router.urls() == EVERY_NAME
    assert "answers again" in caplog.text


async def test_a_refused_registration_is_logged_once_and_tried_again_next_round(caplog):
    node = Node()
    node._router(ROUTER, 3.0).refuse_add = True
    with caplog.at_level(logging.WARNING, logger="ocrd.cluster"):
        await node.registrar.sync()
        await node.registrar.sync()
    assert caplog.text.count("builtin/ppocr not registered") == 1
    node.router.refuse_add = False
    await node.registrar.sync()
    assert node.router.urls() == EVERY_NAME


async def test_stop_withdraws_every_name_it_registered():
    node = Node()
    await node.registrar.sync()
    await node.registrar.stop()
    assert node.router.urls() == {}
    assert node.router.closed


async def test_stop_waits_no_longer_than_the_timeout_for_a_router_that_hangs(caplog):
    node = Node(timeout=0.2)
    await node.registrar.sync()
    node.router.hang = True
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, logger="ocrd.cluster"):
        await node.registrar.stop()
    assert asyncio.get_running_loop().time() - started < 2.0
    assert "took over 0.2s; stopping without it" in caplog.text


async def test_stop_ends_the_rounds_before_withdrawing():
    node = Node(interval=0.05)
    node.registrar.start()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if ROUTER in node.routers and node.router.urls():
            break
    await node.registrar.stop()
    await asyncio.sleep(0.1)  # no round left to register anything again
    assert node.router.urls() == {}


async def test_a_reload_to_another_router_moves_the_registration_and_turning_it_off_withdraws_it():
    node = Node()
    await node.registrar.sync()
    node.cluster = node.cluster.model_copy(update={"router_url": "http://other:30000"})
    await node.registrar.sync()
    assert node.router.urls() == {}
    assert node.routers["http://other:30000"].urls() == EVERY_NAME

    node.cluster = node.cluster.model_copy(update={"router_url": ""})
    await node.registrar.sync()
    assert node.routers["http://other:30000"].urls() == {}
    calls = len(node.routers["http://other:30000"].calls)
    await node.registrar.sync()
    assert len(node.routers["http://other:30000"].calls) == calls


async def test_a_new_advertised_url_replaces_the_old_ones():
    node = Node()
    await node.registrar.sync()
    node.cluster = node.cluster.model_copy(update={"advertise_url": "http://10.0.0.9:8000"})
    await node.registrar.sync()
    assert node.router.urls() == {url.replace(NODE, "http://10.0.0.9:8000"): name
                                  for url, name in EVERY_NAME.items()}


@pytest.mark.parametrize(("advertise", "warned"), [("", True), ("http://127.0.0.1:8000", True),
                                                   ("http://10.0.0.5:8000", False)])
async def test_a_loopback_address_advertised_to_a_remote_router_is_warned_about(caplog, advertise, warned):
    node = Node(advertise_url=advertise)
    node.registrar = Registrar(lambda: node.cluster, lambda: "http://127.0.0.1:8000",
                               lambda: node.models, lambda: True, api=node._router)
    with caplog.at_level(logging.WARNING, logger="ocrd.cluster"):
        await node.registrar.sync()
    assert ("a loopback address the router cannot reach" in caplog.text) is warned


async def test_stop_with_the_router_gone_says_so_in_one_line(caplog):
    node = Node()
    await node.registrar.sync()
    node.router.down = True
    with caplog.at_level(logging.WARNING, logger="ocrd.cluster"):
        await node.registrar.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].endswith("did not answer DELETE: ConnectError (and 3 more)"), lines
