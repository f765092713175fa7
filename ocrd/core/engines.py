"""Engine kinds: everything that differs between ocrd's engines, in one table.

``ENGINES`` has one ``EngineKind`` per engine: how many requests one of its runners serves at
once, when a crashed runner is restarted, whether it runs on this host (and so counts toward
memory and ``scheduler.max_loaded_models``), whether it may use a GPU, whether it quantizes,
whether its weights come from the shared Hugging Face cache, whether this host may lack it, and
which of the daemon's runner builders starts it. Modules ask the table (``engine_kind(name)``)
instead of comparing engine names; what an engine *does* (its planner estimates, its runner
options) stays with the part that does it.

Engine names shown to users and accepted in the configuration, over HTTP and over gRPC are the
table's ``SELECTABLE`` ones; ``engine_wish`` and ``quantization_wish`` turn a wish as a user writes
it ("auto", "", None, a name) into what the core works with (None: no wish).

A leaf module: it imports no other part of ocrd at run time (the catalog and the configuration
read it too), and knows runners only by the daemon's builders it is handed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocrd.errors import InvalidRequest

if TYPE_CHECKING:
    from ocrd.catalog import CatalogEntry
    from ocrd.config.settings import Settings
    from ocrd.runners.base import Runner, RunnerFactory, RunnerSpec

# Requests passed to an upstream server at once unless its model says otherwise: such servers
# (vLLM, hosted APIs) batch, and their own limits answer 429s that pass through.
UPSTREAM_CONCURRENCY = 64
# What the transformers engine can do to its weights; "auto" (the planner's choice) is no wish.
QUANTIZATIONS = ("none", "8bit", "4bit")
NO_WISH = ("auto", "")


@dataclass(frozen=True)
class RestartPolicy:
    """Restarts of a runner that crashed while serving: ``attempts`` in a row (0: never), the
    first after ``backoff`` seconds, each next one twice as long; ``setting`` names where the
    attempts come from, for the messages."""

    attempts: int = 0
    backoff: float = 0.0
    setting: str = ""


NEVER_RESTARTED = RestartPolicy()


@dataclass(frozen=True)
class EngineKind:
    name: str
    title: str  # as the planner's reasons write it ("vLLM")
    # Which of the daemon's runner builders starts it (``runner_factory``): a runner subprocess,
    # a vLLM server (container or subprocess), or a client of a server ocrd does not run.
    runner: str
    # Requests one runner serves at once (unless [models.X] max_concurrent_requests says):
    # builtin and transformers runners answer one at a time (a second would only wait inside
    # them, hidden from the queue accounting); vLLM batches, which is its point; so may an upstream.
    concurrency: Callable[[Settings], int]
    restarts: Callable[[Settings], RestartPolicy]
    # Named by users: in models.toml, [models.X] engine, planner.engine, --mode, /models/load.
    # An upstream is not: an [[upstreams]] table makes a model one.
    selectable: bool = True
    # A runner on this host: it holds memory, counts toward max_loaded_models and can be evicted.
    # An upstream holds nothing here: ocrd only routes to it.
    runs_here: bool = True
    # May run on a GPU: planning it takes NVML's snapshot and the model's size.
    uses_gpu: bool = False
    # Loads weights 8-bit or 4-bit when asked (--quant, quantization settings).
    quantizes: bool = False
    # Its weights are a snapshot in the shared Hugging Face cache: a model not downloaded is not
    # servable, and `ocrctl pull` fetches it.
    hf_cache: bool = False
    # An extra this host may lack: its availability is probed (``ocrd.planning.availability``).
    optional: bool = False
    # Runner processes per model unless [models.X] replicas says (0: the engine has no replicas:
    # a vLLM server batches and spreads over its GPUs itself; an upstream is one server).
    replicas: Callable[[Settings], int] = lambda settings: 1


def _one_per_two_cores(settings: Settings) -> int:
    # A builtin runner answers one request at a time with onnxruntime's threads; two cores per
    # replica keep each one fed without the replicas fighting over cores.
    return max(1, (os.cpu_count() or 1) // 2)


def _no_replicas(settings: Settings) -> int:
    return 0


def _one_at_a_time(settings: Settings) -> int:
    return 1


def _never(settings: Settings) -> RestartPolicy:
    return NEVER_RESTARTED


def _vllm_restarts(settings: Settings) -> RestartPolicy:
    return RestartPolicy(settings.vllm.restart_attempts, settings.vllm.restart_backoff,
                         "vllm.restart_attempts")


ENGINES: dict[str, EngineKind] = {kind.name: kind for kind in (
    EngineKind("builtin", "builtin", runner="process", concurrency=_one_at_a_time, restarts=_never,
               replicas=_one_per_two_cores),
    EngineKind("transformers", "transformers", runner="process", concurrency=_one_at_a_time, restarts=_never,
               uses_gpu=True, quantizes=True, hf_cache=True, optional=True),
    EngineKind("vllm", "vLLM", runner="vllm", concurrency=lambda s: s.vllm.max_concurrent_requests,
               restarts=_vllm_restarts, uses_gpu=True, hf_cache=True, optional=True, replicas=_no_replicas),
    EngineKind("upstream", "upstream", runner="upstream", concurrency=lambda s: UPSTREAM_CONCURRENCY,
               restarts=_never, selectable=False, runs_here=False, replicas=_no_replicas),
)}

# The engines a user names, in the table's order.
SELECTABLE = tuple(name for name, kind in ENGINES.items() if kind.selectable)


def engine_kind(name: str) -> EngineKind:
    """The kind of engine ``name``; ValueError for a name ocrd does not have (a bug: names that
    come from users go through ``engine_wish`` first)."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"ocrd has no {name!r} engine") from None


def in_hf_cache(entry: CatalogEntry) -> bool:
    """Whether some engine of ``entry`` loads its weights from the shared Hugging Face cache."""
    return any(engine_kind(engine).hf_cache for engine in entry.engines)


def engine_wish(value: str | None, *, param: str = "engine") -> str | None:
    """A wish for an engine as a user writes it: None for no wish ("auto", "" or None), else the
    engine's name; InvalidRequest naming the choices for a name ocrd does not have."""
    if value is None or value in NO_WISH:
        return None
    if value not in SELECTABLE:
        raise InvalidRequest(f"unknown engine {value!r}; use one of: {', '.join(SELECTABLE)}",
                             param=param)
    return value


def quantization_wish(value: str | None, *, param: str = "quantization") -> str | None:
    """A wish for a quantization: None for no wish ("auto", "" or None), else one of
    ``QUANTIZATIONS``; InvalidRequest naming the choices otherwise."""
    if value is None or value in NO_WISH:
        return None
    if value not in QUANTIZATIONS:
        raise InvalidRequest(f"unknown quantization {value!r}; use one of: "
                             f"{', '.join(('auto', *QUANTIZATIONS))}", param=param)
    return value


def quantizing_engines() -> str:
    """"the transformers engine": for messages about quantization."""
    names = [name for name, kind in ENGINES.items() if kind.quantizes]
    return f"the {' or '.join(names)} engine{'s' if len(names) > 1 else ''}"


def runner_factory(builders: Mapping[str, Callable[[RunnerSpec], Runner]]) -> RunnerFactory:
    """The scheduler's runner factory from the daemon's builders, one per ``EngineKind.runner``
    (the daemon supplies them, so the core never imports a runner's implementation)."""
    missing = {kind.runner for kind in ENGINES.values()} - set(builders)
    if missing:
        raise ValueError(f"no runner builder for {sorted(missing)}")

    def build(spec: RunnerSpec) -> Runner:
        return builders[engine_kind(spec.engine).runner](spec)

    return build


def replica_count(engine: str, wished: int | None, settings: Settings) -> int:
    """Runner processes for a model of ``engine``: ``wished`` ([models.X] replicas), else the
    engine's default; always 1 for an engine without replicas (vLLM, upstreams)."""
    default = engine_kind(engine).replicas(settings)
    return 1 if default == 0 else (wished or default)
