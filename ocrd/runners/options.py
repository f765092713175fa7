"""Runner options: what a runner of an engine needs beyond the catalog entry, from the settings.

The options travel to the runner as ``--options JSON``; their shapes are documented next to the
engines that read them (``ocrd/worker/builtin_worker.py``, ``ocrd/worker/transformers_worker.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.catalog.facts import TransformersFacts
from ocrd.config import Settings
from ocrd.errors import EngineUnavailable
from ocrd.hf_cache import Snapshot


def builtin_options(entry: CatalogEntry, settings: Settings) -> dict[str, Any]:
    options = dict(entry.engine_options.get("builtin", {}))
    builtin = settings.builtin
    if options.get("backend") == "ppocr":
        options.setdefault("det_limit_side_len", builtin.ppocr_det_limit_side_len)
    elif options.get("backend") == "tesseract":
        options.setdefault("tesseract_cmd", builtin.tesseract_cmd)
        options.setdefault("languages", builtin.tesseract_languages)
        options.setdefault("psm", builtin.tesseract_psm)
    return options


def transformers_options(
    entry: CatalogEntry,
    settings: Settings,
    snapshot: Snapshot,
    hub_dir: Path,
    device: str,
    *,
    quantization: str,
) -> dict[str, Any]:
    """The ``--options`` of a transformers runner (documented in transformers_worker.py).

    ``device`` is the device as the runner sees it (``cuda:0``: its one visible GPU, or ``cpu``)
    and ``quantization`` the planner's choice (``none``, ``8bit`` or ``4bit``; the planner resolves
    ``auto``, see ``ocrd.planner``)."""
    if quantization not in ("none", "8bit", "4bit"):
        raise ValueError(f"quantization must be decided by the planner, got {quantization!r}")
    facts = entry.transformers or TransformersFacts()
    config = settings.transformers
    if facts.trust_remote_code and not config.allow_remote_code:
        raise EngineUnavailable(
            f"{entry.id} runs Python code from its repository (trust_remote_code) and "
            f"transformers.allow_remote_code is off"
        )
    on_gpu = device.startswith("cuda")
    dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    attn = config.attn_implementation
    if attn == "auto":
        attn = facts.attn_implementation or "auto"
    return {
        "repo_id": entry.id,
        "revision": snapshot.commit,
        "cache_dir": str(hub_dir),
        "offline": snapshot.complete,
        "loader": facts.loader,
        "api": facts.api,
        "trust_remote_code": facts.trust_remote_code,
        "transformers_version": facts.transformers_version,
        "quantization": quantization,
        "dtype": dtype,
        "device": device,
        "attn_implementation": attn,
        "processor_options": dict(facts.processor_options),
        "generation": {**config.generation, "max_new_tokens": config.max_new_tokens, **_sampling(entry)},
        "stop": list(entry.stop),
    }


def _sampling(entry: CatalogEntry) -> dict[str, Any]:
    """The model's default sampling, in generate()'s names."""
    names = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_new_tokens"}
    return {names[key]: value for key, value in entry.sampling.items() if key in names}
