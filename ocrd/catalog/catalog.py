"""The catalog: which models ocrd knows, by id and alias, read from ``models.toml``."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ocrd.errors import ModelNotFound


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    engines: tuple[str, ...] = ()
    # Executable the model needs on this host (e.g. tesseract); None when it needs none.
    requires_binary: str | None = None
    # Engine-specific settings, e.g. {"builtin": {"backend": "ppocr"}}.
    engine_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def default_engine(self) -> str:
        return self.engines[0]


class Catalog:
    def __init__(self, entries: list[CatalogEntry], binaries: dict[str, str] | None = None):
        # binaries: name in models.toml -> command configured for it (e.g. a tesseract path).
        self._binaries = binaries or {}
        self._entries = {entry.id: entry for entry in entries}
        self._names: dict[str, str] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in self._names:
                    raise ValueError(f"catalog name {name!r} is used twice")
                self._names[name] = entry.id

    @classmethod
    def load_default(cls, binaries: dict[str, str] | None = None) -> Catalog:
        text = resources.files("ocrd.catalog").joinpath("models.toml").read_text("utf-8")
        return cls(parse_entries(tomllib.loads(text)), binaries)

    def entries(self) -> list[CatalogEntry]:
        """Every known model, available on this host or not."""
        return list(self._entries.values())

    def available(self) -> list[CatalogEntry]:
        """The models this host can serve (their required binaries are present)."""
        return [entry for entry in self._entries.values() if self.is_available(entry)]

    def is_available(self, entry: CatalogEntry) -> bool:
        if entry.requires_binary is None:
            return True
        command = self._binaries.get(entry.requires_binary, entry.requires_binary)
        return shutil.which(command) is not None

    def resolve(self, name: str) -> CatalogEntry:
        """The entry for an id or alias; ModelNotFound (404) listing what exists otherwise."""
        model_id = self._names.get(name)
        if model_id is None:
            known = ", ".join(sorted(e.id for e in self.available())) or "none"
            raise ModelNotFound(f"model {name!r} does not exist; models ocrd can serve: {known}")
        entry = self._entries[model_id]
        if not self.is_available(entry):
            raise ModelNotFound(
                f"model {name!r} needs the {entry.requires_binary!r} program, which is not installed "
                f"on this host (Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-rus)"
            )
        return entry


def parse_entries(data: dict[str, Any]) -> list[CatalogEntry]:
    entries = []
    for number, raw in enumerate(data.get("model", []), start=1):
        raw = dict(raw)
        model_id = raw.pop("id", None)
        engines = tuple(raw.pop("engines", ()))
        if not model_id:
            raise ValueError(f"catalog entry {number} has no id")
        if not engines or not set(engines) <= _ENGINE_TABLES:
            raise ValueError(
                f"catalog entry {model_id}: engines must be a non-empty subset of "
                f"{sorted(_ENGINE_TABLES)}, got {list(engines)}"
            )
        options = {engine: raw.pop(engine) for engine in list(raw) if engine in _ENGINE_TABLES}
        entries.append(
            CatalogEntry(
                id=model_id,
                aliases=tuple(raw.pop("aliases", ())),
                description=raw.pop("description", ""),
                engines=engines,
                requires_binary=raw.pop("requires_binary", None),
                engine_options=options,
            )
        )
        if raw:
            raise ValueError(f"unknown catalog keys for {model_id}: {sorted(raw)}")
    return entries


_ENGINE_TABLES = {"builtin", "transformers", "vllm"}
