"""The shared Hugging Face cache as the control plane shows it: what is cached, what of it is
loaded now and by which engine, what the catalog knows; deletion that refuses (or, forced,
first unloads) a loaded model; verification of a cached model; and downloads into the cache.

Reading and deleting go through huggingface_hub (``ocrd.cache.inventory``), never by walking the cache.
Names are resolved here: a catalog id or alias becomes its repo id, and a pull without a revision
takes the one the configuration or the catalog pins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ocrd.cache.inventory import CacheDeletion, CachedRepo, delete_cached, scan_repos
from ocrd.cache.pull import Puller, PullStep
from ocrd.cache.verify import CacheVerification, verify_cached
from ocrd.catalog import CatalogEntry
from ocrd.core.engines import in_hf_cache
from ocrd.core.scheduler import Scheduler
from ocrd.errors import Conflict, InvalidRequest, ModelNotFound, OcrdError
from ocrd.events import ModelState
from ocrd.model_ids import check_model_name

LOADED_STATES = (ModelState.LOADING, ModelState.READY, ModelState.UNLOADING)


@dataclass(frozen=True)
class CacheEntry:
    repo: CachedRepo
    loaded_by_engine: str  # empty when not loaded
    in_catalog: bool


@dataclass(frozen=True)
class CacheInventory:
    cache_dir: Path
    entries: tuple[CacheEntry, ...]
    total_bytes: int


class CacheService:
    def __init__(self, scheduler: Scheduler, downloads: Puller) -> None:
        self._scheduler = scheduler
        self._downloads = downloads  # the daemon's one Puller: one download per repository

    @property
    def hub_dir(self) -> Path:
        return self._scheduler.directory.hub_dir

    def _loaded(self) -> dict[str, str]:
        return {slot.id: slot.engine for slot in self._scheduler.models() if slot.state in LOADED_STATES}

    async def inventory(self) -> CacheInventory:
        hub_dir = self.hub_dir
        repos = await asyncio.to_thread(scan_repos, hub_dir)
        loaded = self._loaded()
        known = {entry.id for entry in self._scheduler.directory.catalog.entries()}
        entries = tuple(
            CacheEntry(
                repo=repo,
                loaded_by_engine=loaded.get(repo.repo_id, "") if repo.repo_type == "model" else "",
                in_catalog=repo.repo_type == "model" and repo.repo_id in known,
            )
            for repo in repos
        )
        return CacheInventory(hub_dir, entries, sum(repo.size_bytes for repo in repos))

    def repo_id(self, name: str) -> str:
        """A catalog id or alias as its repo id; else ``name`` itself if it is a plain repo id.

        Checked first (``ocrd.model_ids``) so that nothing shaped like a path reaches the cache."""
        check_model_name(name)
        for entry in self._scheduler.directory.catalog.entries():
            if name == entry.id or name in entry.aliases:
                return entry.id
        if "/" in name:
            return name
        raise InvalidRequest(
            f"{name!r} is neither a model ocrd knows nor a Hugging Face repo id (ORG/NAME)",
            param="model",
        )

    async def delete(
        self, name: str, revision: str = "", *, dry_run: bool = False, force: bool = False
    ) -> CacheDeletion:
        repo_id = self.repo_id(name)
        hub_dir = self.hub_dir
        # Unknown repo or revision: NOT_FOUND before anything is unloaded.
        await self._delete(hub_dir, repo_id, revision, dry_run=True)
        engine = self._loaded().get(repo_id)
        if engine is not None and not dry_run:
            if not force:
                raise Conflict(
                    f"{repo_id} is loaded ({engine}); unload it first (`ocrctl unload {repo_id}`) "
                    "or delete with --force"
                )
            await self._scheduler.unload(repo_id)
        return await self._delete(hub_dir, repo_id, revision, dry_run=dry_run)

    async def _delete(self, hub_dir: Path, repo_id: str, revision: str, *, dry_run: bool) -> CacheDeletion:
        try:
            return await asyncio.to_thread(delete_cached, hub_dir, repo_id, revision or None, dry_run=dry_run)
        except LookupError as exc:
            raise ModelNotFound(str(exc)) from exc
        finally:
            if not dry_run:  # deleted, or partly: what the directory read of the cache is stale
                self._scheduler.directory.cache_changed()

    async def verify(self, name: str, revision: str = "") -> CacheVerification:
        repo_id = self.repo_id(name)
        try:
            return await asyncio.to_thread(verify_cached, self.hub_dir, repo_id, revision or None)
        except LookupError as exc:
            raise ModelNotFound(str(exc)) from exc

    async def pull(self, name: str, revision: str = "") -> AsyncIterator[PullStep]:
        """Downloads a model into the cache (see ``ocrd.cache.pull``); progress steps, the last done."""
        repo_id = self.repo_id(name)
        entry = self._catalog_entry(repo_id)
        if entry is not None and not in_hf_cache(entry):
            raise InvalidRequest(f"{repo_id} is built into ocrd ({', '.join(entry.engines)} engine): "
                                 "there is nothing to download", param="model")
        steps = self._downloads.pull(
            self.hub_dir, repo_id, revision or self.pinned_revision(repo_id) or "main",
            events=self._scheduler.events,
        )
        try:
            async for step in steps:
                if step.done:  # the model is servable from here: seen as soon as the client hears
                    self._scheduler.directory.cache_changed()
                yield step
        finally:
            self._scheduler.directory.cache_changed()

    def pinned_revision(self, repo_id: str) -> str | None:
        """The revision to fetch when none is asked for: the configuration's ``[models.X]``
        revision, else the catalog's pin for the engine the model runs on here."""
        directory = self._scheduler.directory
        entry = self._catalog_entry(repo_id)
        model = directory.wishes(entry or CatalogEntry(repo_id))
        if model.configured_revision or entry is None:
            return model.configured_revision
        try:
            engine = directory.engine_for(model)
        except OcrdError:
            engine = entry.default_engine  # not servable here yet: its preferred engine
        return entry.pinned_revision(engine)

    def _catalog_entry(self, repo_id: str) -> CatalogEntry | None:
        return next((e for e in self._scheduler.directory.catalog.entries() if e.id == repo_id), None)
