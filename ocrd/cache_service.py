"""The shared Hugging Face cache as the control plane shows it: what is cached, what of it is
loaded now and by which engine, what the catalog knows; and deletion that refuses (or, forced,
first unloads) a loaded model.

Reading and deleting go through huggingface_hub (``ocrd.hf_cache``), never by walking the cache.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ocrd.errors import Conflict, InvalidRequest, ModelNotFound
from ocrd.events import ModelState
from ocrd.hf_cache import CacheDeletion, CachedRepo, delete_cached, scan_repos
from ocrd.scheduler import Scheduler

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
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
    def __init__(self, scheduler: Scheduler):
        self._scheduler = scheduler

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
        """A catalog id or alias as its repo id; else ``name`` itself if it is a plain repo id."""
        for entry in self._scheduler.directory.catalog.entries():
            if name == entry.id or name in entry.aliases:
                return entry.id
        if REPO_ID.match(name):
            try:
                validate_repo_id(name)
            except HFValidationError:
                pass
            else:
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

    @staticmethod
    async def _delete(hub_dir: Path, repo_id: str, revision: str, *, dry_run: bool) -> CacheDeletion:
        try:
            return await asyncio.to_thread(delete_cached, hub_dir, repo_id, revision or None, dry_run=dry_run)
        except LookupError as exc:
            raise ModelNotFound(str(exc)) from exc
