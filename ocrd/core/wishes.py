"""A model's wishes, resolved once: what the settings, its ``[models."ID"]`` table and a load's
request ask of one model.

``resolve_wishes(entry, settings, load)`` reads the configuration for a model exactly once and
returns a ``ModelWishes``: the engine, quantization and device asked for, each with where it
comes from (for the planner's reasons), the revision to load, the extra ``vllm serve``
arguments, the vLLM share of a GPU fixed by the user, and the scheduling settings (keep-alive,
pin, queue size, concurrency). The scheduler keeps one per slot (resolved again on SIGHUP and
when a load asks for something), and the directory, the planner's preference and the runner
options read it instead of the settings.

Wishes are precedence, most specific first: the load's request (``ocrctl load --mode --quant
--pin --keep-alive``, ``POST /models/load``), then ``[models.X]``, then the engine-wide settings.
"auto", "" and None are no wish (``ocrd.core.engines``); nothing after this module sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ocrd.catalog import CatalogEntry
from ocrd.config.settings import Settings, model_overrides
from ocrd.core.engines import engine_kind, engine_wish, quantization_wish, quantizing_engines
from ocrd.errors import InvalidRequest
from ocrd.planning.planner import Preference

# Where a load's wishes come from, as the planner's reasons name it.
LOAD_SOURCE = "the request (--mode / --quant)"
T = TypeVar("T")


@dataclass(frozen=True)
class LoadWish:
    """What loads of a model asked for; the scheduler keeps it until the model unloads.
    None (and False) is no wish: the configuration decides."""

    engine: str | None = None
    quantization: str | None = None
    keep_alive: float | None = None
    pin: bool = False

    @classmethod
    def asked(cls, engine: str | None = None, quantization: str | None = None,
              keep_alive: float | None = None, pin: bool = False) -> LoadWish:
        """A request's wishes as a user writes them ("auto" and "" are no wish); InvalidRequest
        for an engine or quantization ocrd does not have."""
        return cls(engine_wish(engine), quantization_wish(quantization), keep_alive, pin)

    @property
    def plans(self) -> bool:
        """Whether it asks for something the planner decides (engine, quantization)."""
        return self.engine is not None or self.quantization is not None

    def then(self, newer: LoadWish) -> LoadWish:
        """These wishes with a later request's on top: what the later one leaves unsaid stays."""
        return LoadWish(
            engine=newer.engine or self.engine,
            quantization=newer.quantization or self.quantization,
            keep_alive=newer.keep_alive if newer.keep_alive is not None else self.keep_alive,
            pin=self.pin or newer.pin,
        )


NO_LOAD_WISH = LoadWish()


@dataclass(frozen=True)
class ModelWishes:
    """Everything the configuration and a load ask of one model (see the module doc)."""

    entry: CatalogEntry
    load: LoadWish = NO_LOAD_WISH
    section: str = ""  # '[models."ID"]': where per-model settings live, for the reasons
    # The load's engine, else [models.X] engine: the model must support it (else a 400).
    engine: str | None = None
    engine_from: str = ""
    # planner.engine: applies to the models that support it.
    preferred_engine: str | None = None
    quantization: str | None = None
    quantization_from: str = ""
    device: str | None = None  # "cpu", "cuda", "cuda:N"
    device_from: str = ""
    configured_revision: str | None = None  # [models.X] revision
    vllm_args: tuple[str, ...] = ()  # vllm.args then [models.X] vllm_args, after the catalog's
    gpu_memory_utilization: float | None = None
    keep_alive: float = 0.0
    pinned: bool = False
    preload: bool = False  # [models.X] preload: loaded at start, pinned, awaited by /health/ready
    queue_size: int = 0
    max_concurrent_requests: int | None = None  # None: the engine's (``EngineKind.concurrency``)
    replicas: int | None = None  # [models.X] replicas; None: the engine's (``EngineKind.replicas``)
    dtype: str = "auto"  # transformers.dtype
    max_new_tokens: int = 4096  # transformers.max_new_tokens

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def revision(self) -> str | None:
        """The cached revision to load: the config's, else the catalog's pin, else None (main)."""
        pinned = self.entry.transformers.revision if self.entry.transformers else None
        return self.configured_revision or pinned

    def wanted_engine(self) -> str | None:
        """The engine asked for before the planner looks at memory: the load's or the model's
        (checked: the model must support it), else planner.engine where the model supports it."""
        if self.engine is not None:
            check_engine(self.entry, self.engine)
            return self.engine
        if self.preferred_engine in self.entry.engines:
            return self.preferred_engine
        return None

    def preference(self) -> Preference:
        """The planner's input: every wish with its source."""
        engine, engine_from = self.engine, self.engine_from
        if engine is None and self.preferred_engine is not None:
            engine, engine_from = self.preferred_engine, "planner.engine"
        return Preference(
            engine=engine, engine_from=engine_from,
            quantization=self.quantization, quantization_from=self.quantization_from,
            device=self.device, device_from=self.device_from,
            dtype=self.dtype, max_new_tokens=self.max_new_tokens, vllm_args=self.vllm_args,
            gpu_memory_utilization=self.gpu_memory_utilization,
            gpu_memory_utilization_from=f"{self.section} gpu_memory_utilization",
        )


def resolve_wishes(entry: CatalogEntry, settings: Settings, load: LoadWish = NO_LOAD_WISH) -> ModelWishes:
    """The one place that reads what the settings ask of ``entry`` (see the module doc)."""
    per_model = model_overrides(settings, entry.id, list(entry.aliases))
    section = f"[models.{entry.id!r}]".replace("'", '"')
    transformers, scheduler = settings.transformers, settings.scheduler
    engine, engine_from = _first_wish([(load.engine, LOAD_SOURCE), (per_model.engine, f"{section} engine")])
    quantization, quantization_from = _first_wish([
        (load.quantization, LOAD_SOURCE), (per_model.quantization, f"{section} quantization"),
        (transformers.quantization, "transformers.quantization")])
    device, device_from = _first_wish([(per_model.device, f"{section} device"),
                                       (transformers.device, "transformers.device")])
    return ModelWishes(
        entry=entry, load=load, section=section,
        engine=engine, engine_from=engine_from,
        preferred_engine=engine_wish(settings.planner.engine),
        quantization=quantization, quantization_from=quantization_from,
        device=device, device_from=device_from,
        configured_revision=per_model.revision,
        vllm_args=(*settings.vllm.args, *per_model.vllm_args),
        gpu_memory_utilization=per_model.gpu_memory_utilization,
        keep_alive=_first(load.keep_alive, per_model.keep_alive, scheduler.keep_alive),
        pinned=load.pin or per_model.pinned or per_model.preload,
        preload=per_model.preload,
        queue_size=_first(per_model.queue_size, scheduler.queue_size),
        max_concurrent_requests=per_model.max_concurrent_requests,
        replicas=per_model.replicas,
        dtype=transformers.dtype, max_new_tokens=transformers.max_new_tokens,
    )


def check_engine(entry: CatalogEntry, engine: str) -> None:
    """InvalidRequest when ``entry`` cannot run on ``engine``."""
    if engine not in entry.engines:
        raise InvalidRequest(f"{entry.id} cannot run on the {engine} engine; it supports: "
                             f"{', '.join(entry.engines)}", param="engine")


def check_quantization(entry: CatalogEntry, wish: LoadWish, engine: str) -> None:
    """InvalidRequest for a quantization the engine the model would run on cannot do: ``engine``
    when the wish names none (then any quantizing engine of the model's will do)."""
    if wish.quantization in (None, "none"):
        return
    wanted = wish.engine or engine
    quantizes = engine_kind(wanted).quantizes or (
        wish.engine is None and any(engine_kind(e).quantizes for e in entry.engines))
    if not quantizes:
        raise InvalidRequest(f"{entry.id} runs on the {wanted} engine, which does not quantize; "
                             f"quantization (8bit/4bit) is for {quantizing_engines()}",
                             param="quantization")


def _first_wish(wishes: list[tuple[str | None, str]]) -> tuple[str | None, str]:
    """The first (value, source) that states a wish; "auto" and unset leave it to the planner."""
    for value, source in wishes:
        if value not in (None, "", "auto"):
            return value, source
    return None, ""


def _first(*values: T | None) -> T:
    return next(value for value in values if value is not None)
