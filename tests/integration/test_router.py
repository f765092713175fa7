"""ocrd nodes behind the real vllm-router (docs/scale-out.md): three real ``ocrd serve`` daemons,
each on a host of its own, registering itself (``[cluster]``, ocrd.cluster) with a real
``vllm-router --enable-igw``, and requests sent through the router with the official ``openai``
client.

Hosts: each node runs in its own Linux network namespace on one bridge (tests/support/netns.py),
like machines on a LAN: every node binds port 8000, and the router, in the test's namespace, reaches
them only at the addresses they advertise. ``ppocr-a`` and ``ppocr-c`` listen on 0.0.0.0 and
advertise their LAN address through ``OCRD_CLUSTER__ADVERTISE_URL``, as the Kubernetes manifests
do; ``both-b`` binds its LAN address and advertises what it bound (the default). Without root
(or ``ip``) the nodes run on loopback ports instead, and say so; in CI (``OCRD_REQUIRE_NETNS=1``)
that is a failure.

Models: ``ppocr-a`` and ``ppocr-c`` serve the builtin PP-OCR only (their tesseract command does not
exist, so tesseract is not listed there), ``both-b`` serves PP-OCR and Tesseract: a tesseract
request has one right node, a ppocr request three. Which node served what is read from each
node's own ``ocrd_requests_total``, not from the router. The router runs with ``--policy
round_robin`` (its default, cache_aware, may keep similar prompts on one node: right, but it
would prove less) and health checks every second (60 s by default) so that the test sees a dead
node marked down in seconds.

What is checked, and what the router was seen to do (numbers in docs/scale-out.md):

* every name a node serves (each id and alias) is registered at its own URL, and each request
  (chat, streamed or not) lands on a node that serves its model; the
  fields the router adds to chat bodies are accepted;
* a node SIGKILLed while it runs non-stream requests: the router retries them elsewhere, no
  client sees an error; the node started again registers itself again (it replaces the entries
  the router had marked unhealthy) and gets traffic at once;
* a node SIGKILLed while it streams: the streams it had started end early for their clients (no
  ``[DONE]``), the router does not replay them; streams it had not started yet are served
  elsewhere;
* the router killed and started again lists nothing, and every node registers itself again
  within its interval; a node stopped while the router is down stops at once; a clean shutdown
  withdraws the node's URLs from the router, and so does a reload to another router (one that
  answers errors: logged, and the node serves on).

Every process (router, daemons, their runners) is ended at the end of each test, also when it
fails. About 60 s on two cores (115 s when other work keeps the load average at 5).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import netns
from tests.support.daemon import (
    RunningDaemon,
    assert_no_runner_survives,
    deep_merge,
    free_port,
    ocr_messages,
    wait_until,
)
from tests.support.netns import Lan
from tests.support.render import char_accuracy, render_text_image
from tests.support.vllm_router import RunningRouter, running_router

pytestmark = pytest.mark.slow

NODE_PORT = 8000  # on a host of its own, every node takes ocrd's default port
INTERVAL = 0.5  # cluster.interval of the nodes: a forgotten node is back within it
REGISTERED_TIMEOUT = 30.0  # hang guard: registration takes about a second
PPOCR, TESSERACT = "builtin/ppocr", "builtin/tesseract"
SHORT = ["ROUTED 2718"]
# About a second of PP-OCR per request on a quiet two-core machine: long enough to kill a
# node while it works on one.
LONG = [f"Line {i} of a page the router spreads" for i in range(24)]


def node_config(router: RunningRouter, *, tesseract: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cluster": {"router_url": router.url, "interval": INTERVAL, "timeout": 2},
        # One PP-OCR runner per node, whatever the core count: one request at a time each.
        "models": {PPOCR: {"replicas": 1}},
    }
    if not tesseract:
        config["builtin"] = {"tesseract_cmd": "/nonexistent/tesseract"}
    return config


@dataclass
class Cluster:
    router: RunningRouter
    configs: dict[str, dict[str, Any]]
    lan: Lan | None  # None: every node on loopback, at a port of its own
    nodes: dict[str, RunningDaemon] = field(default_factory=dict)
    started: list[RunningDaemon] = field(default_factory=list)  # every daemon, restarts included

    def start(self, name: str, wait: bool = True) -> RunningDaemon:
        """Node ``name``, or the same node again: the same host, address and port."""
        config, env, host, prefix = self.configs[name], {}, "127.0.0.1", []
        if self.lan is not None:
            node = self.lan.hosts[name]
            host, prefix = node.address, node.prefix
            if name.startswith("both"):  # binds its address, and advertises what it bound
                config = deep_merge(config, {"http": {"host": node.address, "port": NODE_PORT}})
            else:  # binds every address, and is told which one to advertise
                config = deep_merge(config, {"http": {"host": "0.0.0.0", "port": NODE_PORT}})
                env = {"OCRD_CLUSTER__ADVERTISE_URL": f"http://{node.address}:{NODE_PORT}"}
        daemon = RunningDaemon(config, env=env, host=host, prefix=prefix, wait_ready=False)
        self.started.append(daemon)
        self.nodes[name] = daemon
        if wait:
            daemon.wait_ready()
        return daemon

    def names(self, name: str) -> dict[str, str]:
        """{URL: model} the router should list for node ``name``."""
        base = self.nodes[name].base_url + "/cluster/"
        names = {"builtin--ppocr": PPOCR, "ppocr": "ppocr"}
        if name.startswith("both"):
            names |= {"builtin--tesseract": TESSERACT, "tesseract": "tesseract"}
        return {base + path: model for path, model in names.items()}

    def wait_registered(self, *names: str) -> float:
        """Seconds until the router lists exactly these nodes' URLs, all healthy."""
        wanted = {url: model for name in names for url, model in self.names(name).items()}
        started = time.monotonic()
        try:
            wait_until(lambda: self.router.urls() == wanted and all(
                w["is_healthy"] for w in self.router.workers()), timeout=REGISTERED_TIMEOUT,
                interval=0.05, message=f"the router lists {sorted(wanted)}")
        except AssertionError as exc:
            logs = {name: [line for line in node.stderr().splitlines() if "ocrd.cluster" in line]
                    for name, node in self.nodes.items()}
            raise AssertionError(f"{exc}; it lists {self.router.urls()}; the nodes said {logs}") from None
        return time.monotonic() - started

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.router.url + "/v1", api_key="unused", timeout=120,
                             max_retries=0)


@contextlib.contextmanager
def hosts(names: list[str]) -> Iterator[Lan | None]:
    """A LAN with a namespace per node, or None (loopback) where this machine cannot make one."""
    reason = netns.require_or_skip_reason()
    if reason:
        print(f"nodes on loopback ports, not on hosts of their own: {reason}")
        yield None
        return
    with netns.lan(names) as network:
        print("nodes on hosts of their own: " + ", ".join(
            f"{host.name} at {host.address}" for host in network.hosts.values()))
        yield network


@contextlib.contextmanager
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    names = ["ppocr-a", "both-b", "ppocr-c"]
    with hosts(names) as lan, running_router(
            tmp_path / "router.log", "--policy", "round_robin", "--health-check-interval-secs", "1",
            host=lan.gateway if lan else "127.0.0.1") as router:
        configs = {name: node_config(router, tesseract=name.startswith("both")) for name in names}
        if lan is None:  # a port each, kept across restarts
            for config in configs.values():
                config["http"] = {"host": "127.0.0.1", "port": free_port()}
        state = Cluster(router, configs, lan)
        try:
            for name in configs:  # started together, then waited for
                state.start(name, wait=False)
            for daemon in state.started:
                daemon.wait_ready()
            yield state
        finally:
            # Every daemon is ended, whatever happened to the ones before it; then the first
            # failure (a daemon that would not stop, a runner that outlived it) is raised.
            failures: list[BaseException] = []
            for daemon in state.started:
                try:
                    daemon.stop()
                    assert_no_runner_survives(daemon)
                except BaseException as exc:
                    failures.append(exc)
                finally:
                    daemon.kill()
                    daemon.close()
            if failures:
                raise failures[0]


@contextlib.contextmanager
def not_a_router(host: str) -> Iterator[str]:
    """The URL of an HTTP server on ``host`` that answers 404 to everything: a wrong router_url."""
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_DELETE = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def served(node: RunningDaemon) -> dict[str, int]:
    """{model: requests answered 200} from the node's own /metrics."""
    text = httpx.get(node.base_url + "/metrics", timeout=30).text
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("ocrd_requests_total{") and 'status="200"' in line:
            model = line.split('model="', 1)[1].split('"', 1)[0]
            counts[model] = counts.get(model, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def running(node: RunningDaemon) -> int:
    text = httpx.get(node.base_url + "/metrics", timeout=30).text
    return int(float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("ocrd_requests_running "))))


def read(client: openai.OpenAI, model: str, lines: list[str]) -> str:
    reply = client.chat.completions.create(model=model, messages=ocr_messages(render_text_image(lines)))
    return reply.choices[0].message.content or ""


def test_requests_land_on_the_nodes_that_serve_their_model(tmp_path):
    with cluster(tmp_path) as state:
        seconds = state.wait_registered("ppocr-a", "both-b", "ppocr-c")
        print(f"registered {len(state.router.urls())} URLs within {seconds:.2f}s of READY")

        with state.client() as client, ThreadPoolExecutor(3) as pool:
            models = [PPOCR] * 6 + ["ppocr"] * 3 + [TESSERACT] * 4 + ["tesseract"] * 2
            texts = list(pool.map(lambda model: read(client, model, SHORT), models))
            assert all(char_accuracy(SHORT[0], text) >= 0.9 for text in texts), texts

            # A stream through the router: the node's events, whole, to [DONE].
            stream = client.chat.completions.create(
                model=TESSERACT, stream=True, messages=ocr_messages(render_text_image(SHORT)))
            assert char_accuracy(SHORT[0], "".join(c.choices[0].delta.content or "" for c in stream
                                                   if c.choices)) >= 0.9

        # Mistral's /v1/ocr is not routed here: vllm-router 0.1.17 in igw mode hands a path it
        # does not know to one of its routers picked at random per router process, and in 5 of 6
        # starts here that was its prefill/decode one, which answers 503 "No available workers:
        # 0 prefill, 0 decode" (docs/scale-out.md). Chat is what it routes by model.

        counts = {name: served(node) for name, node in state.nodes.items()}
        print(f"requests served per node: {counts}")
        # Tesseract: only the node that has it (6 chat requests and the stream).
        assert counts["both-b"].get(TESSERACT) == 7
        assert TESSERACT not in counts["ppocr-a"] and TESSERACT not in counts["ppocr-c"]
        # PP-OCR: all nine, spread over the three nodes.
        assert sum(count.get(PPOCR, 0) for count in counts.values()) == 9
        assert all(count.get(PPOCR, 0) >= 1 for count in counts.values()), counts

        # What the router sends a node's URL is served as at the root: health and metrics too.
        node = state.nodes["both-b"]
        assert httpx.get(node.base_url + "/cluster/tesseract/health").status_code == 200
        assert httpx.get(node.base_url + "/cluster/builtin--tesseract/v1/models").json() == \
            httpx.get(node.base_url + "/v1/models").json()


def _burst(client: openai.OpenAI, count: int, lines: list[str]) -> list[Any]:
    """``count`` PP-OCR requests at once through the router: each one's text, or its exception."""
    def one(_: int) -> Any:
        try:
            return read(client, PPOCR, lines)
        except Exception as exc:  # recorded, asserted by the caller
            return exc
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _kill_while_it_works(node: RunningDaemon, work: Any) -> Any:
    """Runs ``work`` in a thread and SIGKILLs ``node`` once it holds a request; ``work``'s result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    wait_until(lambda: running(node) >= 1, timeout=60, interval=0.02,
               message="the node to be killed got no request")
    # Its answer has begun (a stream's first events leave within milliseconds of its turn), and
    # PP-OCR on this page takes far longer than this.
    time.sleep(0.1)
    node.send_signal(signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "requests through the router hung"
    node.kill()  # reaps it, and ends its runners
    return result[0]


def _stream(router: RunningRouter, lines: list[str]) -> str:
    """How one stream through the router ends, read as raw server-sent events (the openai client
    cannot tell a stream cut short from one that ended): "done" ([DONE] after the whole text),
    "error event", "ended without [DONE]", or the exception that cut it."""
    body = {"model": PPOCR, "stream": True, "messages": ocr_messages(render_text_image(lines))}
    text, events = "", []
    try:
        with httpx.stream("POST", router.url + "/v1/chat/completions", json=body, timeout=120) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if line[6:] not in ("[DONE]",) and '"error"' not in line:
                        text += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
    except httpx.HTTPError as exc:
        return f"cut: {type(exc).__name__}: {exc}"
    if any('"error"' in event for event in events):
        return "error event"
    if events[-1:] != ["[DONE]"]:
        return "ended without [DONE]"
    assert char_accuracy("\n".join(lines), text) >= 0.9, text
    return "done"


def _streams(router: RunningRouter, count: int, lines: list[str]) -> list[str]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: _stream(router, lines), range(count)))


def test_a_node_killed_mid_traffic_is_retried_elsewhere_and_registers_itself_again(tmp_path):
    with cluster(tmp_path) as state:
        state.wait_registered("ppocr-a", "both-b", "ppocr-c")
        victim = state.nodes["ppocr-a"]
        with state.client() as client:
            # Non-stream requests: those on the killed node are sent again by the router.
            results = _kill_while_it_works(victim, lambda: _burst(client, 6, LONG))
            errors = [r for r in results if isinstance(r, Exception)]
            assert errors == [], errors
            retries = state.router.metric("vllm_router_retries_total")
            print(f"non-stream requests through a node killed mid-traffic: {len(results)} answered, "
                  f"0 errors, {retries:g} retries by the router")
            assert retries >= 1  # what the killed node held was sent again, not lost
            assert all(char_accuracy("\n".join(LONG), text) >= 0.9 for text in results)

            # Started again at the same address, the node registers itself again at once: the
            # router's entries, marked unhealthy meanwhile, are replaced by healthy ones.
            wait_until(lambda: not all(w["is_healthy"] for w in state.router.workers()),
                       timeout=30, message="the router did not see the node die")
            state.start("ppocr-a")
            seconds = state.wait_registered("ppocr-a", "both-b", "ppocr-c")
            print(f"killed node back in the router's list within {seconds:.2f}s of READY")
            # The router may list the old entries as healthy again before the node's own round
            # (same address): the node's log says that it registered itself.
            wait_until(lambda: "registered with the router" in state.nodes["ppocr-a"].stderr(),
                       timeout=30, interval=0.1, message="the restarted node did not register itself")
            read(client, PPOCR, SHORT)  # each node loads PP-OCR once
            read(client, PPOCR, SHORT)
            read(client, PPOCR, SHORT)
            assert served(state.nodes["ppocr-a"]).get(PPOCR, 0) >= 1  # it gets traffic again

            # Streams: the ones the killed node had started end early; the others are served.
            victim = state.nodes["ppocr-a"]
            ended = _kill_while_it_works(victim, lambda: _streams(state.router, 5, LONG))
        print(f"streams when their node was killed: {ended}")
        assert ended.count("done") >= 3, ended  # those on the other nodes, or not started yet
        assert len(ended) - ended.count("done") >= 1, ended  # the one it was streaming


def test_a_restarted_router_gets_every_node_again_and_a_clean_stop_withdraws_the_node(tmp_path):
    with cluster(tmp_path) as state:
        state.wait_registered("ppocr-a", "both-b", "ppocr-c")
        state.router.kill()  # it forgets every worker

        # A node stopped while the router is down stops at once, and says what it could not do.
        node = state.nodes["ppocr-c"]
        started = time.monotonic()
        assert node.stop() == 0
        stop_seconds = time.monotonic() - started
        assert stop_seconds < 10, stop_seconds
        assert "not withdrawn" in node.stderr()
        # One started while the router is down gets READY as always, and registers later.
        state.start("ppocr-c")

        state.router.start()  # same port, empty list
        seconds = state.wait_registered("ppocr-a", "both-b", "ppocr-c")
        print(f"router restarted: every node back within {seconds:.2f}s; a node stopped with the "
              f"router down took {stop_seconds:.2f}s")
        assert "registering them again" in state.nodes["both-b"].stderr()

        # A clean shutdown withdraws the node: the router lists only the others.
        assert state.nodes["both-b"].stop() == 0
        assert set(state.router.urls()) == set(state.names("ppocr-a")) | set(state.names("ppocr-c"))
        assert "withdrawn from the router" in state.nodes["both-b"].stderr()
        with state.client() as client:
            with pytest.raises(openai.NotFoundError):  # nobody serves it now: a node says 404
                read(client, TESSERACT, SHORT)
            assert char_accuracy(SHORT[0], read(client, PPOCR, SHORT)) >= 0.9

        # A reload to another router (cluster.* keys apply on SIGHUP) withdraws the node from
        # this one at once. The other "router" answers 404 to /workers: one warning, and the
        # node serves on.
        node = state.nodes["ppocr-a"]
        with not_a_router(state.lan.gateway if state.lan else "127.0.0.1") as wrong:
            node.reload(deep_merge(node.config, {"cluster": {"router_url": wrong}}))
            wait_until(lambda: set(state.router.urls()) == set(state.names("ppocr-c")), timeout=10,
                       message="the reloaded node withdrawn")
            wait_until(lambda: f"the router at {wrong} answered GET /workers with 404" in
                       node.stderr(), timeout=10, message="the error answer logged")
            assert httpx.get(node.base_url + "/health").status_code == 200
