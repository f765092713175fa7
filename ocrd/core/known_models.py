"""Every model ocrd knows, whether this host can serve it now or not (``ocrctl models --all``).

The directory answers "what can be served here" (``ModelDirectory.available``: what
``GET /v1/models`` and ``ocrctl models`` list). A user choosing a model wants the rest too: the
whole catalog, the upstreams and ``[models."ORG/NAME"]`` tables of the configuration, with what
each weighs, which engines can run it (and which of them this host can run now), whether it is in
the daemon's Hugging Face cache, and, when it cannot be served, why in the words a load would
use. Read-only: this asks the directory and looks at the cache; it changes nothing.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

from ocrd.cache.inventory import repo_folder
from ocrd.catalog import CatalogEntry
from ocrd.core.directory import ModelDirectory
from ocrd.core.engines import in_hf_cache
from ocrd.errors import OcrdError
from ocrd.planning.availability import Availability

# Whether this host can run an engine now (``ModelDirectory.availability``, asked once per engine).
_Availability = Callable[[str], Availability]


class Download(enum.Enum):
    NOT_NEEDED = "not needed"  # builtin (ships with ocrd) or upstream (served elsewhere)
    NOT_DOWNLOADED = "not downloaded"
    PARTIAL = "partial"  # an interrupted download, missing shards, another revision
    DOWNLOADED = "downloaded"


@dataclass(frozen=True)
class EngineChoice:
    """An engine that can run a model, and whether this host can run it now."""

    name: str
    available: bool
    reason: str = ""  # why not, when not available


@dataclass(frozen=True)
class KnownModel:
    entry: CatalogEntry
    # The engine that serves the model, or would once it can be served; "" when none can here.
    engine: str
    engines: tuple[EngineChoice, ...]
    download: Download
    # The weights' download size from the catalog (bf16 safetensors); None when unknown or
    # when there is nothing to download.
    size_bytes: int | None
    # Why this host cannot serve it now, as a load would say it; "" when it can.
    unavailable: str = ""


def known_models(directory: ModelDirectory) -> list[KnownModel]:
    """Every model ocrd knows: those this host can serve first, then those downloaded (or that
    need no download) but held back by something else, then the ones not downloaded; by id
    within each group (blocking: it reads the cache, like ``ModelDirectory.available``)."""
    servable = directory.available()
    served_ids = {entry.id for entry in servable}
    engines: dict[str, Availability] = {}  # asked once per engine, not once per model

    def availability(engine: str) -> Availability:
        if engine not in engines:
            engines[engine] = directory.availability(engine)
        return engines[engine]

    models = [
        _known(directory, entry, availability, served=entry.id in served_ids)
        for entry in _entries(directory, servable)
    ]
    return sorted(models, key=_order)


def _entries(directory: ModelDirectory, servable: list[CatalogEntry]) -> list[CatalogEntry]:
    """The catalog (with the upstream that took a model over in its place), then the servable
    models it does not list (upstreams of their own, cached models), then ``[models."ORG/NAME"]``
    names that nothing else knows (a model configured before it is downloaded)."""
    by_id = {entry.id: entry for entry in servable}
    entries = [by_id.pop(entry.id, entry) for entry in directory.catalog.entries()]
    entries += by_id.values()
    known = {name for entry in entries for name in (entry.id, *entry.aliases)}
    for name in directory.settings.models:
        if "/" in name and name not in known:
            known.add(name)
            entries.append(CatalogEntry(
                id=name, description=f'configured in [models."{name}"]; not in ocrd\'s catalog'))
    return entries


def _known(directory: ModelDirectory, entry: CatalogEntry, availability: _Availability, *,
           served: bool) -> KnownModel:
    download = _download(directory, entry)
    return KnownModel(
        entry=entry,
        engine=_engine(directory, entry),
        engines=tuple(EngineChoice(name, a.available, a.reason)
                      for name in entry.engines for a in [availability(name)]),
        download=download,
        size_bytes=entry.bf16_bytes if in_hf_cache(entry) else None,
        unavailable="" if served else _unavailable(directory, entry, download),
    )


def _engine(directory: ModelDirectory, entry: CatalogEntry) -> str:
    try:
        return directory.engine_for(directory.wishes(entry))
    except OcrdError:
        return ""


def _download(directory: ModelDirectory, entry: CatalogEntry) -> Download:
    if entry.engines and not in_hf_cache(entry):
        return Download.NOT_NEEDED
    snapshot = directory.snapshot(directory.wishes(entry))
    if snapshot is not None:
        return Download.DOWNLOADED if snapshot.complete else Download.PARTIAL
    # No snapshot of the revision ocrd loads, but something of the model: huggingface_hub's
    # blobs of an interrupted download (which `ocrctl pull` resumes), or another revision.
    try:
        with os.scandir(repo_folder(directory.hub_dir, entry.id) / "blobs") as blobs:
            return Download.PARTIAL if any(blobs) else Download.NOT_DOWNLOADED
    except OSError:
        return Download.NOT_DOWNLOADED


def _unavailable(directory: ModelDirectory, entry: CatalogEntry, download: Download) -> str:
    """Why ``entry`` is not served: what a load of it would answer."""
    if not entry.engines and download is Download.NOT_DOWNLOADED:
        # Unknown to the catalog: only its config.json, once downloaded, says what it is.
        return f"not downloaded: fetch it with `ocrctl pull {entry.id}`"
    try:
        directory.resolve(entry.id)
    except OcrdError as exc:
        return exc.message
    return ""


def _order(model: KnownModel) -> tuple[int, str]:
    if not model.unavailable:
        group = 0
    elif model.download is Download.NOT_DOWNLOADED:
        group = 2
    else:
        group = 1
    return group, model.entry.id.casefold()
