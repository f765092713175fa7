"""Prometheus metrics (``GET /metrics``).

Counters come from the request path and the event bus; per-model gauges (state, in-flight,
queued, memory) are read from the scheduler at scrape time, so they can never drift from it.
Labels carry canonical model ids only (never what a client typed), so cardinality stays bounded
by the catalog.

For a router that picks nodes by load (the Gateway API Inference Extension's model-server
protocol asks for queued requests, running requests and KV-cache utilisation; docs/scale-out.md),
the same scheduler counts are also exported unlabelled, for the whole node:
``ocrd_requests_running`` and ``ocrd_requests_waiting``, and ``ocrd_capacity_used_ratio``, the
share of the loaded models' concurrency in use (0 to 1), with ``ocrd_model_capacity_used_ratio``
per model. ocrd's builtin and Transformers runners have no paged KV cache to report; requests in
flight against what the runners serve at once is what fills up on them instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ocrd.core.slots import SlotInfo
from ocrd.errors import OcrdError
from ocrd.events import Event, ModelState

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, slots: Callable[[], list[SlotInfo]]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ocrd_requests", "Chat completion requests by model and HTTP status",
            ["model", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "ocrd_request_duration_seconds", "Time to the full answer (non-stream) or to the "
            "start of the stream", ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.transitions = Counter(
            "ocrd_model_events", "Model lifecycle events (loads, failures, unloads, rejections)",
            ["model", "kind"], registry=self.registry,
        )
        self.connections_dropped = Counter(
            "ocrd_http_connections_dropped", "HTTP connections refused or closed by ocrd: "
            "over_limit (503), header_timeout, body_timeout (408)", ["reason"],
            registry=self.registry,
        )
        self.batch_lines = Counter(
            "ocrd_batch_lines", "Batch lines run, by model and outcome (completed: 2xx, failed: "
            "the rest)", ["model", "outcome"], registry=self.registry,
        )
        self.registry.register(_SlotCollector(slots))

    def watch_batch_queue(self, queued: Callable[[], Mapping[str, int]]) -> None:
        """``ocrd_batch_lines_queued{model}``: lines of running batches not yet run."""
        self.registry.register(_BatchQueueCollector(queued))

    @contextmanager
    def observe(self, model: str) -> Iterator[None]:
        """Counts one request to ``model`` with the status it ends with."""
        started = time.perf_counter()
        status = 200
        try:
            yield
        except OcrdError as exc:
            status = exc.http_status
            raise
        except BaseException:
            status = 500
            raise
        finally:
            self.requests.labels(model, str(status)).inc()
            self.latency.labels(model).observe(time.perf_counter() - started)

    def on_event(self, event: Event) -> None:
        if event.model and event.kind != "model.progress":
            self.transitions.labels(event.model, event.kind).inc()


class _BatchQueueCollector(Collector):
    def __init__(self, queued: Callable[[], Mapping[str, int]]):
        self._queued = queued

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("ocrd_batch_lines_queued", "Lines of running batches not yet run",
                                  labels=["model"])
        for model, count in sorted(self._queued().items()):
            gauge.add_metric([model], count)
        yield gauge


class _SlotCollector(Collector):
    def __init__(self, slots: Callable[[], list[SlotInfo]]):
        self._slots = slots

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("ocrd_model_state", "1 for the state each model is in",
                                  labels=["model", "state"])
        in_flight = GaugeMetricFamily("ocrd_model_in_flight", "Requests holding the model",
                                      labels=["model"])
        queued = GaugeMetricFamily("ocrd_model_queued", "Requests waiting for the model",
                                   labels=["model"])
        memory = GaugeMetricFamily("ocrd_model_memory_bytes", "Memory the model's runner holds",
                                   labels=["model"])
        used = GaugeMetricFamily("ocrd_model_capacity_used_ratio", "Requests holding the model "
                                 "over those its runners serve at once (0 to 1)", labels=["model"])
        infos = self._slots()
        for info in infos:
            for candidate in ModelState:
                state.add_metric([info.id, candidate.value], 1.0 if info.state == candidate else 0.0)
            in_flight.add_metric([info.id], info.in_flight)
            queued.add_metric([info.id], info.queued)
            memory.add_metric([info.id], info.memory_bytes)
            used.add_metric([info.id], _ratio(info.in_flight, info.concurrency))
        yield from (state, in_flight, queued, memory, used)
        yield from _node_load(infos)


def _node_load(infos: list[SlotInfo]) -> Iterator[GaugeMetricFamily]:
    """The whole node's load, unlabelled: what a load-aware router reads as one number per node
    (the model-server protocol's TotalRunningRequests, TotalQueuedRequests and, for want of a KV
    cache, KVCacheUtilization)."""
    running = sum(info.in_flight for info in infos)
    yield GaugeMetricFamily("ocrd_requests_running", "Requests holding a model now (a turn on "
                            "its runner), all models together", value=running)
    yield GaugeMetricFamily("ocrd_requests_waiting", "Requests waiting for a model (for its load "
                            "or for a turn), all models together; queued batch lines not counted",
                            value=sum(info.queued for info in infos))
    # Only models with a runner (or one on the way) have capacity to fill; an idle node is at 0.
    active = [info for info in infos if info.state != ModelState.NOT_LOADED]
    yield GaugeMetricFamily("ocrd_capacity_used_ratio", "Requests holding a model over what the "
                            "runners of the loaded models serve at once (0 to 1)",
                            value=_ratio(running, sum(info.concurrency for info in active)))


def _ratio(part: int, whole: int) -> float:
    return min(1.0, part / whole) if whole > 0 else 0.0
