"""Runner options: what a runner of an engine needs beyond the catalog entry, from the settings."""

from __future__ import annotations

from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.config import Settings


def engine_options(entry: CatalogEntry, engine: str, settings: Settings) -> dict[str, Any]:
    """What the runner of ``engine`` needs beyond the catalog entry, from the settings."""
    options = dict(entry.engine_options.get(engine, {}))
    if engine == "builtin":
        builtin = settings.builtin
        if options.get("backend") == "ppocr":
            options.setdefault("det_limit_side_len", builtin.ppocr_det_limit_side_len)
        elif options.get("backend") == "tesseract":
            options.setdefault("tesseract_cmd", builtin.tesseract_cmd)
            options.setdefault("languages", builtin.tesseract_languages)
            options.setdefault("psm", builtin.tesseract_psm)
    return options
