"""The catalog: which models ocrd knows, by id and alias, read from ``models.toml``.

Each entry carries the facts the rest of ocrd needs without touching the model: the engines that
can run it (and why the others cannot), the transformers loader and version constraints, the
`vllm serve` arguments, named prompt presets, default sampling and size figures for the planner.
``models.toml`` cites the source of every fact; this module only reads and checks them.
"""

from __future__ import annotations

import copy
import functools
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ocrd.catalog.documents import DocumentFacts, document_facts
from ocrd.catalog.facts import TransformersFacts, VllmFacts, transformers_facts, vllm_facts
from ocrd.catalog.inferred import inferred_transformers_facts
from ocrd.catalog.presets import (
    Preset,
    RenderedPreset,
    check_sampling,
    find_preset,
    parse_presets,
    render,
)
from ocrd.catalog.programs import ProgramFinder
from ocrd.core.engines import SELECTABLE
from ocrd.errors import InvalidRequest, ModelNotFound

# The engines a catalog entry may name (``ocrd.core.engines``: upstreams come from the config).
ENGINES = SELECTABLE
# "model:preset" in a request's model field; ids and aliases never contain it.
PRESET_SEPARATOR = ":"
SEED_MEMORY_KEYS = ("transformers_8bit", "vllm")


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    # The engines that can run the model, in order of preference.
    engines: tuple[str, ...] = ()
    # Executable the model needs on this host (e.g. tesseract); None when it needs none.
    requires_binary: str | None = None
    # Engine-specific settings, passed to that engine's runner: {"builtin": {"backend": "ppocr"}},
    # {"transformers": {"loader": ...}}, {"vllm": {"args": [...]}}. Typed views: .transformers, .vllm.
    engine_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, Preset] = field(default_factory=dict)
    # The preset for a request that carries an image and no text; None: no such default.
    default_preset: str | None = None
    # Defaults for a plain chat request (no preset); presets already include them.
    sampling: dict[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    params_billion: float | None = None
    bf16_bytes: int | None = None
    # Parameters of the vision encoder and projector, which ocrd's quantization keeps in 16-bit;
    # the planner's fallback when the model is not downloaded (its safetensors headers say more).
    vision_params_billion: float | None = None
    # engine -> why the model cannot run on it.
    unsupported: dict[str, str] = field(default_factory=dict)
    # The seed document's memory table (GB), kept for the planner to compare its estimates with.
    seed_memory_gb: dict[str, float] = field(default_factory=dict)
    # True for a cached model the catalog does not list (facts inferred from its config.json).
    inferred: bool = False
    # How it reads whole pages ([model.document]); None: the default preset at documents.default_dpi.
    document: DocumentFacts | None = None
    # The weights' licence as the model card names it ("apache-2.0", "mit", "Qwen RESEARCH LICENSE");
    # None for a cached model the catalog does not list (ocrd never guesses one).
    license: str | None = None
    # What the licence restricts, in a few words, where it does ("commercial use restricted: ...").
    license_note: str | None = None

    @property
    def default_engine(self) -> str:
        return self.engines[0]

    @property
    def transformers(self) -> TransformersFacts | None:
        if "transformers" not in self.engines:
            return None
        return transformers_facts(self.id, self.engine_options.get("transformers", {}))

    @property
    def vllm(self) -> VllmFacts | None:
        if "vllm" not in self.engines:
            return None
        return vllm_facts(self.id, self.engine_options.get("vllm", {}))

    def pinned_revision(self, engine: str) -> str | None:
        """The revision the catalog pins for running the model on ``engine``: the transformers
        table's ``revision``, or a ``--revision`` among the vLLM server's arguments."""
        if engine == "transformers" and self.transformers:
            return self.transformers.revision
        if engine == "vllm" and self.vllm and "--revision" in self.vllm.args[:-1]:
            return self.vllm.args[self.vllm.args.index("--revision") + 1]
        return None

    def preset(self, name: str, *, param: str = "model") -> Preset:
        """The preset ``name``; InvalidRequest (400) listing this model's presets otherwise."""
        return find_preset(self.id, self.presets, name, param=param)

    def prompt_wrap(self, engine: str | None) -> tuple[str, str]:
        """The (prefix, suffix) ``engine`` needs around every prompt of this model."""
        options = self.engine_options.get(engine or "", {})
        return options.get("prompt_prefix", ""), options.get("prompt_suffix", "")


def render_preset(
    entry: CatalogEntry,
    preset_name: str | None,
    user_text: str | None,
    *,
    engine: str | None = None,
) -> RenderedPreset:
    """The prompt, sampling, stop strings and processor arguments for one request.

    ``preset_name`` None means the entry's default preset. ``user_text`` fills a ``{text}``
    placeholder and is ignored by fixed prompts (see ``ocrd.catalog.presets``). With ``engine``,
    the engine's wrapping (e.g. dots.ocr's image tokens on vLLM) is applied around the prompt.
    """
    name = preset_name or entry.default_preset
    if name is None:
        raise InvalidRequest(f"model {entry.id!r} has no default preset; name one", param="model")
    prefix, suffix = entry.prompt_wrap(engine)
    return render(entry.preset(name), entry.id, user_text, prefix=prefix, suffix=suffix)


def split_model_preset(
    name: str, resolve: Callable[[str], CatalogEntry]
) -> tuple[CatalogEntry, str | None]:
    """``"dots.ocr:layout"`` -> (the dots.ocr entry, "layout"); ``"dots.ocr"`` -> (entry, None).

    Only the part after the last ":" can be a preset, and only a preset of the model it follows:
    anything else after a ":" is an InvalidRequest listing that model's presets. ``resolve`` is the
    id/alias lookup (the catalog's, or the daemon's directory that also knows cached models) and
    raises ModelNotFound for an unknown model.
    """
    if PRESET_SEPARATOR not in name:
        return resolve(name), None
    model, _, preset = name.rpartition(PRESET_SEPARATOR)
    entry = resolve(model)
    if not preset:
        raise InvalidRequest(f"model {name!r} ends with {PRESET_SEPARATOR!r} but names no preset",
                             param="model")
    entry.preset(preset, param="model")
    return entry, preset


class Catalog:
    def __init__(self, entries: list[CatalogEntry], binaries: dict[str, str] | None = None,
                 programs: ProgramFinder | None = None):
        # binaries: name in models.toml -> command configured for it (e.g. a tesseract path).
        self._binaries = binaries or {}
        self._programs = programs or ProgramFinder()
        self._entries = {entry.id: entry for entry in entries}
        self._names: dict[str, str] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in self._names:
                    raise ValueError(f"catalog name {name!r} is used twice")
                if PRESET_SEPARATOR in name:
                    raise ValueError(f"catalog name {name!r} contains {PRESET_SEPARATOR!r}, "
                                     f"which separates a model from its preset")
                self._names[name] = entry.id

    @classmethod
    def load_default(cls, binaries: dict[str, str] | None = None) -> Catalog:
        return cls(default_entries(), binaries)

    def with_extra(self, entries: Iterable[CatalogEntry]) -> Catalog:
        """This catalog plus ``entries`` (e.g. cached models it does not list), same binaries.
        ValueError when one of them reuses a known id or alias."""
        return Catalog([*self._entries.values(), *entries], self._binaries, self._programs)

    @staticmethod
    def inferred_entry(repo_id: str, config: Mapping[str, Any]) -> CatalogEntry | None:
        """An entry for a cached model the catalog does not list, from its ``config.json``:
        transformers only, no presets; None unless the config describes an image-text-to-text
        model (see ``ocrd.catalog.inferred``)."""
        facts = inferred_transformers_facts(config)
        if facts is None:
            return None
        return CatalogEntry(
            id=repo_id,
            description=f"{repo_id} (not in ocrd's catalog; facts inferred from its config.json)",
            engines=("transformers",),
            engine_options={"transformers": facts},
            inferred=True,
        )

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
        return self._programs.installed(command)

    def recheck_programs(self) -> None:
        """Forget what was found of the programs models need; the next question looks again."""
        self._programs.forget()

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

    def resolve_request_model(self, name: str) -> tuple[CatalogEntry, str | None]:
        """A request's ``model`` field -> (entry, preset name or None); see split_model_preset."""
        return split_model_preset(name, self.resolve)


# --- reading models.toml ------------------------------------------------------------------------


@functools.cache
def _default_data() -> dict[str, Any]:
    text = resources.files("ocrd.catalog").joinpath("models.toml").read_text("utf-8")
    return tomllib.loads(text)


def default_entries() -> list[CatalogEntry]:
    # A deep copy: entries hand their dicts to runners, which must not edit the cached data.
    return parse_entries(copy.deepcopy(_default_data()))


def parse_entries(data: dict[str, Any]) -> list[CatalogEntry]:
    """``models.toml`` (parsed) -> entries; ValueError naming the entry and key on bad data."""
    defaults = dict(data.get("unsupported_defaults", {}))
    entries = []
    for number, raw in enumerate(data.get("model", []), start=1):
        raw = dict(raw)
        model_id = raw.pop("id", None)
        if not model_id:
            raise ValueError(f"catalog entry {number} has no id")
        entries.append(_parse_entry(model_id, raw, defaults))
    return entries


def _parse_entry(model_id: str, raw: dict[str, Any], unsupported_defaults: dict[str, str]) -> CatalogEntry:
    engines = tuple(raw.pop("engines", ()))
    if not engines or not set(engines) <= set(ENGINES):
        raise ValueError(
            f"catalog entry {model_id}: engines must be a non-empty subset of "
            f"{sorted(ENGINES)}, got {list(engines)}"
        )
    options = {engine: dict(raw.pop(engine)) for engine in ENGINES if engine in raw}
    _check_engine_tables(model_id, engines, options)
    prompt_defaults: dict[str, Any] = {
        key: raw.pop(key) for key in ("stop", "skip_special_tokens", "system") if key in raw}
    sampling = dict(raw.pop("sampling", {}))
    check_sampling(f"catalog entry {model_id}", sampling)
    presets = parse_presets(model_id, raw.pop("presets", {}), {**prompt_defaults, "sampling": sampling})
    entry = CatalogEntry(
        id=model_id,
        aliases=tuple(raw.pop("aliases", ())),
        description=raw.pop("description", ""),
        engines=engines,
        requires_binary=raw.pop("requires_binary", None),
        engine_options=options,
        presets=presets,
        default_preset=raw.pop("default_preset", None),
        sampling=sampling,
        stop=tuple(prompt_defaults.get("stop", ())),
        params_billion=raw.pop("params_billion", None),
        bf16_bytes=raw.pop("bf16_bytes", None),
        vision_params_billion=raw.pop("vision_params_billion", None),
        unsupported=_unsupported(model_id, engines, raw.pop("unsupported", {}), unsupported_defaults),
        seed_memory_gb=dict(raw.pop("seed_memory_gb", {})),
        document=document_facts(model_id, raw.pop("document", None)),
        license=raw.pop("license", None),
        license_note=raw.pop("license_note", None),
    )
    if raw:
        raise ValueError(f"unknown catalog keys for {model_id}: {sorted(raw)}")
    _check_entry(entry)
    return entry


def _check_engine_tables(model_id: str, engines: tuple[str, ...], options: dict[str, Any]) -> None:
    stray = set(options) - set(engines)
    if stray:
        raise ValueError(f"catalog entry {model_id}: settings for engines it does not list: {sorted(stray)}")
    if "transformers" in options:
        transformers_facts(model_id, options["transformers"])
    if "vllm" in options:
        vllm_facts(model_id, options["vllm"])


def _unsupported(model_id: str, engines: tuple[str, ...], own: dict[str, str],
                 defaults: dict[str, str]) -> dict[str, str]:
    """The entry's reasons, plus the file-wide default reason for each engine it lacks."""
    if set(own) & set(engines) or not set(own) <= set(ENGINES):
        raise ValueError(f"catalog entry {model_id}: 'unsupported' must name engines it does not list")
    reasons = {engine: reason for engine, reason in defaults.items() if engine not in engines}
    reasons.update(own)
    return reasons


def _check_entry(entry: CatalogEntry) -> None:
    where = f"catalog entry {entry.id}"
    if entry.default_preset is not None and entry.default_preset not in entry.presets:
        raise ValueError(f"{where}: default_preset {entry.default_preset!r} is not one of its presets")
    if entry.params_billion is not None and not entry.params_billion > 0:
        raise ValueError(f"{where}: params_billion must be positive")
    vision = entry.vision_params_billion
    if vision is not None and not (vision > 0 and (entry.params_billion is None or vision < entry.params_billion)):
        raise ValueError(f"{where}: vision_params_billion must be positive and below params_billion")
    if entry.bf16_bytes is not None and not (isinstance(entry.bf16_bytes, int) and entry.bf16_bytes > 0):
        raise ValueError(f"{where}: bf16_bytes must be a positive integer")
    if entry.document is not None and entry.document.preset is not None:
        if entry.document.preset not in entry.presets:
            raise ValueError(f"{where}: [model.document] preset {entry.document.preset!r} is not one of its presets")
    for name in ("license", "license_note"):
        value = getattr(entry, name)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ValueError(f"{where}: {name} must be a non-empty string")
    if entry.license_note is not None and entry.license is None:
        raise ValueError(f"{where}: license_note without a license")
    if not set(entry.seed_memory_gb) <= set(SEED_MEMORY_KEYS):
        raise ValueError(f"{where}: seed_memory_gb keys must be among {list(SEED_MEMORY_KEYS)}")
