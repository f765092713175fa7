"""The models this host can serve, and how to start a runner for each.

The catalog knows models in general; the directory narrows it to this host — the builtin models,
catalog models that are downloaded into the shared Hugging Face cache and whose engine is
installed — and adds cached models the catalog does not know but transformers can load. It
resolves what the settings ask of a model once (``wishes``: ``ocrd.core.wishes``), and from those
wishes knows what the planner needs (size facts) and turns a planner ``Decision`` into the
``RunnerSpec`` a runner starts from. Which engines this host can run is asked of the injected
Docker status (the daemon's ``DockerStatusCache``; tests pass their own) and of the installed
packages (``ocrd.planning.availability``: an extra installed after start-up is seen within
seconds, and at once after a reload, ``apply_settings``). The scheduler asks it;
what it reads of the cache it keeps (``ocrd.cache.snapshot_index``: checked with a few stats at
each look, dropped whenever ocrd changes the cache: ``cache_changed``); nothing else here holds
state beyond the settings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ocrd.cache.inventory import Snapshot, resolve_hub_dir
from ocrd.cache.snapshot_index import SnapshotIndex
from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.config.upstreams import upstream_entries, upstream_options
from ocrd.core.engines import engine_kind, in_hf_cache
from ocrd.core.wishes import NO_LOAD_WISH, LoadWish, ModelWishes, resolve_wishes
from ocrd.errors import EngineUnavailable, InvalidRequest, ModelNotFound
from ocrd.planning.availability import (
    Availability,
    DockerStatusCache,
    DockerStatusProbe,
    engine_availability,
    recheck_packages,
)
from ocrd.planning.model_size import SizeFacts, size_facts
from ocrd.planning.planner import Decision
from ocrd.runners.base import RunnerSpec
from ocrd.runners.options import VllmPlacement, builtin_options, transformers_options, vllm_options

log = logging.getLogger("ocrd.core.directory")


class ModelDirectory:
    def __init__(self, catalog: Catalog, settings: Settings, *,
                 docker_status: DockerStatusProbe | None = None, snapshots: SnapshotIndex | None = None):
        self.catalog = catalog
        self.settings = settings
        # Docker's status, for vLLM's availability: the daemon's cache; else one of its own.
        self._docker_status = docker_status or DockerStatusCache().get
        self._upstreams = _by_name(upstream_entries(settings.upstreams, catalog))
        # Names the catalog knows: any other is looked for in the cache without the catalog's
        # ModelNotFound (which lists the models it can serve) being built first.
        self._catalog_names = frozenset(name for entry in catalog.entries() for name in (entry.id, *entry.aliases))
        self._snapshots = snapshots or SnapshotIndex()  # tests: one that settles sooner
        # Entries inferred for cached models the catalog does not know, with the snapshot each
        # was inferred from: the same snapshot gives the same entry.
        self._inferred_entries: dict[str, tuple[Snapshot, CatalogEntry | None]] = {}

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        # SIGHUP: added upstreams are served and removed ones forgotten from now on.
        self._upstreams = _by_name(upstream_entries(settings.upstreams, self.catalog))
        self.cache_changed()  # the cache itself may be another one now
        recheck_packages()  # an extra installed since start-up is served from now on

    def cache_changed(self) -> None:
        """ocrd changed the Hugging Face cache (a pull, a deletion, a runner's download): what
        was read of it is read again."""
        self._snapshots.invalidate()
        self._inferred_entries.clear()

    @property
    def hub_dir(self) -> Path:
        return resolve_hub_dir(self.settings.cache.hub_dir)

    def wishes(self, entry: CatalogEntry, load: LoadWish = NO_LOAD_WISH) -> ModelWishes:
        """What the settings (and ``load``) ask of ``entry``, resolved once (``ocrd.core.wishes``)."""
        return resolve_wishes(entry, self.settings, load)

    def availability(self, engine: str) -> Availability:
        """Whether this host can run ``engine`` now (``ocrd.planning.availability``)."""
        return engine_availability(engine, self.settings, self._docker_status)

    # --- what can be served ----------------------------------------------------------------------

    def available(self) -> list[CatalogEntry]:
        """Servable now: catalog order (models an upstream took over in their place), then
        upstream models of their own, then cached models the catalog does not know."""
        upstreams = {entry.id: entry for entry in self._upstreams.values()}
        # A catalog model that needs a program (tesseract) is listed where it is installed, as
        # resolve() serves it: a node behind a router registers what this lists (ocrd.cluster).
        entries = [upstreams.pop(entry.id, entry) for entry in self.catalog.entries()
                   if entry.id in upstreams or self.catalog.is_available(entry)]
        entries = [entry for entry in entries if self._servable(entry) is None]
        return entries + list(upstreams.values()) + [
            entry for entry in self._uncatalogued() if entry.id not in self._upstreams]

    def resolve(self, name: str) -> CatalogEntry:
        """The entry for an id or alias, or an error saying what to do to serve it."""
        if name in self._upstreams:
            return self._upstreams[name]
        inferred = None if name in self._catalog_names else self._inferred(name)
        # Known to the catalog, or known nowhere: the catalog's answer (its error says what exists).
        entry = inferred or self.catalog.resolve(name)
        problem = self._servable(entry)
        if problem is not None:
            raise problem
        return entry

    def engine_for(self, model: ModelWishes) -> str:
        """The engine the model would run with, before the planner looks at memory: the one its
        wishes name (the load's, the model's config, ``planner.engine`` where the model supports
        it), else the first that this host can run, in the catalog's order of preference."""
        wanted = model.wanted_engine()
        if wanted:
            return wanted
        reasons = []
        for engine in model.entry.engines:
            availability = self.availability(engine)
            if availability.available:
                return engine
            reasons.append(f"{engine}: {availability.reason}")
        raise EngineUnavailable(f"no engine for {model.id} can run on this host ({'; '.join(reasons)})")

    def _servable(self, entry: CatalogEntry) -> Exception | None:
        if not in_hf_cache(entry):
            return None  # builtin: the catalog already checked its binary; upstream: configured
        model = self.wishes(entry)
        try:
            engine = self.engine_for(model)
        except (EngineUnavailable, InvalidRequest) as exc:
            return exc
        if engine_kind(engine).hf_cache and self.snapshot(model) is None:
            return ModelNotFound(
                f"model {entry.id!r} is not downloaded into the Hugging Face cache at "
                f"{self.hub_dir}; fetch it with `ocrctl pull {entry.id}`",
                code="model_not_downloaded",
            )
        return None

    def snapshot(self, model: ModelWishes) -> Snapshot | None:
        """The cached revision to load: the config's, else the catalog's pin, else main."""
        return self._snapshots.find(self.hub_dir, model.id, model.revision)

    # --- cached models the catalog does not know ---------------------------------------------------

    def _uncatalogued(self) -> list[CatalogEntry]:
        known = {entry.id for entry in self.catalog.entries()}
        entries = []
        for repo_id in _cached_repo_ids(self.hub_dir):
            if repo_id not in known:
                entry = self._inferred(repo_id)
                if entry is not None and self._servable(entry) is None:
                    entries.append(entry)
        return entries

    def _inferred(self, repo_id: str) -> CatalogEntry | None:
        if repo_id.count("/") != 1:
            return None
        snapshot = self._snapshots.find(self.hub_dir, repo_id)
        if snapshot is None:
            return None
        known = self._inferred_entries.get(repo_id)
        if known is not None and known[0] == snapshot:
            return known[1]
        entry = self.catalog.inferred_entry(repo_id, snapshot.config())
        self._inferred_entries[repo_id] = (snapshot, entry)
        return entry

    # --- what the planner needs -------------------------------------------------------------------

    def size_facts(self, model: ModelWishes) -> SizeFacts | None:
        """The model's size from its cached safetensors headers, else the catalog (blocking: it
        reads files; the scheduler calls it in a worker thread)."""
        snapshot = self.snapshot(model) if in_hf_cache(model.entry) else None
        config = snapshot.config() if snapshot is not None else {}
        return size_facts(snapshot.path if snapshot is not None else None, config, model.entry)

    # --- runner specs ---------------------------------------------------------------------------

    def runner_spec(self, model: ModelWishes, decision: Decision, replicas: int = 1) -> RunnerSpec:
        """How to start the runner the planner decided on (one of ``replicas`` of the model)."""
        specs: dict[str, Callable[[ModelWishes, Decision], RunnerSpec]] = {
            "builtin": self._builtin_spec, "transformers": self._transformers_spec,
            "vllm": self._vllm_decided_spec, "upstream": self._upstream_spec,
        }
        build = specs.get(decision.engine)
        if build is None:
            raise EngineUnavailable(f"ocrd has no {decision.engine} engine")
        spec = build(model, decision)
        if replicas > 1 and spec.engine == "builtin" and spec.options.get("backend") == "ppocr":
            # Replicas share the cores: each gets its part instead of all of them.
            cores = max(1, (os.cpu_count() or 1) // replicas)
            spec = dataclasses.replace(spec, options={**spec.options, "threads": cores})
        return spec

    def _builtin_spec(self, model: ModelWishes, decision: Decision) -> RunnerSpec:
        return RunnerSpec(model=model.entry, engine="builtin",
                          options=builtin_options(model.entry, self.settings))

    def _transformers_spec(self, model: ModelWishes, decision: Decision) -> RunnerSpec:
        """A GPU runner sees exactly its planned GPU (``CUDA_VISIBLE_DEVICES=<uuid>``, so it is
        ``cuda:0`` inside); a CPU runner sees none."""
        snapshot = self._downloaded(model)
        on_gpu = decision.device.startswith("cuda")
        options = transformers_options(model.entry, self.settings, snapshot, self.hub_dir,
                                       "cuda:0" if on_gpu else "cpu", quantization=decision.quantization)
        return RunnerSpec(
            model=model.entry, engine="transformers", device=decision.device, options=options,
            python=self.transformers_python(),
            env=self.transformers_environment(decision.gpu_uuid if on_gpu else "", offline=snapshot.complete),
        )

    def transformers_python(self) -> str:
        return self.settings.transformers.python or sys.executable

    def transformers_environment(self, gpu_uuid: str, *, offline: bool = True) -> dict[str, str]:
        """A transformers runner's own environment: the shared cache, offline for a complete
        snapshot, and exactly its GPU (none: ""). Warm runners are started with the same."""
        env = _hub_environment(self.hub_dir, offline=offline)
        env["CUDA_VISIBLE_DEVICES"] = gpu_uuid
        return env

    def _vllm_decided_spec(self, model: ModelWishes, decision: Decision) -> RunnerSpec:
        return self.vllm_spec(model, VllmPlacement(decision.device, decision.gpu_uuid,
                                                   decision.gpu_memory_utilization or None))

    def vllm_spec(self, model: ModelWishes, placement: VllmPlacement) -> RunnerSpec:
        """A vLLM server of the model at ``placement``. On the CPU it sees no GPU; on a GPU the
        container's device request (or the process's CUDA_VISIBLE_DEVICES) gives it its one."""
        snapshot = self._downloaded(model)
        options = vllm_options(model.entry, self.settings, snapshot, self.hub_dir, placement,
                               model.vllm_args)
        env = _hub_environment(self.hub_dir, offline=snapshot.complete)
        if not placement.on_gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return RunnerSpec(model=model.entry, engine="vllm", device=placement.device, options=options,
                          python=self.settings.vllm.python or sys.executable, env=env)

    def _downloaded(self, model: ModelWishes) -> Snapshot:
        snapshot = self.snapshot(model)
        if snapshot is None:
            raise ModelNotFound(f"model {model.id!r} is not downloaded; `ocrctl pull {model.id}`")
        return snapshot

    def adopted_vllm_spec(self, model_id: str, labels: Mapping[str, str]) -> RunnerSpec | None:
        """The spec ocrd would start ``model_id`` from now, at the placement a running container
        of it records in its ``labels`` (the planner's share of a GPU depends on free memory,
        which that container itself now takes). None when the model could not run on vLLM now
        (gone from the cache or the catalog, or vLLM unavailable); ValueError saying why when the
        placement no longer agrees with vllm.device. A model loaded with ``--mode vllm`` is
        adopted too: the container says that vLLM was chosen for it."""
        try:
            entry = self.resolve(model_id)
        except (ModelNotFound, EngineUnavailable, InvalidRequest):
            return None
        if "vllm" not in entry.engines or not self.availability("vllm").available:
            return None
        placement = VllmPlacement.from_labels(labels)
        if placement.device == "cpu" and self.settings.vllm.device != "cpu":
            raise ValueError("it runs on the CPU but vllm.device is now cuda")
        if placement.on_gpu and self.settings.vllm.device == "cpu":
            placement = VllmPlacement("cpu")  # what ocrd would start now: the hash tells them apart
        return self.vllm_spec(self.wishes(entry), placement)

    def _upstream_spec(self, model: ModelWishes, decision: Decision) -> RunnerSpec:
        # The upstream as configured now (a SIGHUP may have changed its URL since the slot began).
        current = self._upstreams.get(model.id, model.entry)
        options = upstream_options(current)
        if not options:
            raise ModelNotFound(f"model {model.id!r} is no longer configured as an upstream")
        options["timeout"] = options.get("timeout") or self.settings.http.request_timeout
        return RunnerSpec(model=current, engine="upstream", device=options["url"], options=options)


def _by_name(entries: list[CatalogEntry]) -> dict[str, CatalogEntry]:
    """Each entry under its id and every alias."""
    return {name: entry for entry in entries for name in (entry.id, *entry.aliases)}


def _hub_environment(hub_dir: Path, offline: bool) -> dict[str, str]:
    env: dict[str, Any] = {"HF_HUB_CACHE": str(hub_dir)}
    if offline:
        # A complete snapshot needs nothing from the Hub; without this every load waits minutes
        # on retries when the Hub is unreachable.
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _cached_repo_ids(hub_dir: Path) -> list[str]:
    """Model repos in the cache, from its directory names (cheap: no file walk)."""
    try:
        names = os.listdir(hub_dir)
    except OSError:
        return []
    return sorted(
        name[len("models--"):].replace("--", "/", 1)
        for name in names if name.startswith("models--")
    )
