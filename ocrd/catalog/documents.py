"""``[model.document]``: how a model reads whole pages (``/v1/ocr``, PDFs in chat).

* ``preset``: the preset ``/v1/ocr`` asks a page with (default: the model's ``default_preset``);
  its ``format`` names the parser of the answer (``ocrd.documents.formats``).
* ``dpi`` or ``longest_side``: the resolution the model's authors render PDF pages at (olmOCR:
  1288 px on the longest side; dots.ocr: 200 dpi), and ``max_side``, a cap on either. Without
  them, ``documents.default_dpi``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Output formats presets may name; the daemon has a parser for most (ocrd.documents.formats) and
# answers 501 for the others (a test keeps the two lists in step). "chandra-html" (Chandra's
# layout divs) has no parser yet.
OUTPUT_FORMATS = ("text", "ocrd-blocks", "dots-layout", "deepseek-grounding", "olmocr", "doctags", "nanonets",
                  "mineru-layout", "chandra-html")


@dataclass(frozen=True)
class DocumentFacts:
    preset: str | None = None
    dpi: int | None = None
    longest_side: int | None = None
    max_side: int | None = None


def document_facts(model_id: str, raw: Mapping[str, Any] | None) -> DocumentFacts | None:
    if raw is None:
        return None
    table = dict(raw)
    where = f"catalog entry {model_id}, [model.document]"
    facts = DocumentFacts(preset=table.pop("preset", None), dpi=table.pop("dpi", None),
                          longest_side=table.pop("longest_side", None), max_side=table.pop("max_side", None))
    if table:
        raise ValueError(f"{where}: unknown keys {sorted(table)}")
    if facts.dpi is not None and facts.longest_side is not None:
        raise ValueError(f"{where}: give dpi or longest_side, not both")
    for name in ("dpi", "longest_side", "max_side"):
        value = getattr(facts, name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{where}: {name} must be a positive integer")
    return facts
