"""Lines with their geometry, for the builtin engine's ``blocks`` output (``/v1/ocr``).

A chat request to a builtin model gets text. The catalog's ``blocks`` preset (processor argument
``output = "blocks"``) gets one JSON document instead, which the daemon's ``ocrd-blocks`` parser
(``ocrd.documents.formats``) turns into Mistral's blocks and confidences::

    {"width": W, "height": H,
     "lines": [{"text": "...", "box": [x0, y0, x1, y1], "confidence": 0.97,
                "paragraph": 3 | null, "words": [{"text": "...", "confidence": 0.97}, ...]}]}

Boxes are in the image's pixels; confidences 0-1. ``paragraph`` is the engine's own paragraph
number where it has one (tesseract); null where the daemon must group lines itself (PP-OCR).
With layout on, ``regions`` lists the layout model's typed regions (``{"type": "title", "box":
[...], "score": 0.9}``, CDLA's classes); with orientation on, the image was turned ``rotation``
degrees counter-clockwise before recognition, and boxes, width and height are the turned image's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocrd.worker.page_layout import Region


@dataclass(frozen=True)
class TextBox:
    """A detected piece of text: PP-OCR's box (one run of text), or one word of tesseract's."""

    text: str
    left: float
    top: float
    bottom: float
    right: float = 0.0
    confidence: float = 1.0  # 0-1


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]
    confidence: float
    words: tuple[tuple[str, float], ...]
    paragraph: int | None

    @classmethod
    def of(cls, boxes: Sequence[TextBox], paragraph: int | None) -> OcrLine:
        """The line made of ``boxes`` (left to right); each box's words carry its confidence."""
        words = tuple((word, box.confidence) for box in boxes for word in box.text.split())
        box = (int(min(b.left for b in boxes)), int(min(b.top for b in boxes)),
               int(round(max(b.right for b in boxes))), int(round(max(b.bottom for b in boxes))))
        confidence = min(b.confidence for b in boxes)
        return cls(" ".join(word for word, _ in words), box, confidence, words, paragraph)

    def to_json(self) -> dict:
        return {"text": self.text, "box": list(self.box), "confidence": round(self.confidence, 4),
                "paragraph": self.paragraph,
                "words": [{"text": t, "confidence": round(c, 4)} for t, c in self.words]}


# Boxes of one line further apart than this many line heights are in different columns or cells.
COLUMN_GAP = 1.5


def split_at_gaps(line: Sequence[TextBox]) -> list[list[TextBox]]:
    """``line``'s boxes (left to right) in runs separated by gaps wider than ``COLUMN_GAP``."""
    parts: list[list[TextBox]] = []
    for box in line:
        if parts:
            last = parts[-1][-1]
            height = max(1.0, min(last.bottom - last.top, box.bottom - box.top))
            if box.left - last.right <= COLUMN_GAP * height:
                parts[-1].append(box)
                continue
        parts.append([box])
    return parts


def blocks_document(lines: Sequence[OcrLine], width: int, height: int, *,
                    regions: Sequence[Region] | None = None, rotation: int = 0) -> str:
    document: dict = {"width": width, "height": height, "rotation": rotation,
                      "lines": [line.to_json() for line in lines]}
    if regions is not None:
        document["regions"] = [{"type": r.type, "box": list(r.box), "score": round(r.score, 4)} for r in regions]
    return json.dumps(document, ensure_ascii=False)


def tesseract_lines(tsv: str) -> list[OcrLine]:
    """Tesseract's TSV (level, page, block, par, line, word, left, top, width, height, conf,
    text) -> its lines in its reading order, each with its paragraph's number. Words with no
    text (conf -1 rows are boxes of blocks, paragraphs and lines) are left out."""
    lines: dict[tuple[int, int, int], list[TextBox]] = {}
    paragraphs: dict[tuple[int, int], int] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        block, par, line = int(row["block_num"]), int(row["par_num"]), int(row["line_num"])
        left, top = float(row["left"]), float(row["top"])
        box = TextBox(text, left, top, top + float(row["height"]), left + float(row["width"]),
                      max(0.0, float(row["conf"])) / 100)
        lines.setdefault((block, par, line), []).append(box)
        paragraphs.setdefault((block, par), len(paragraphs))
    return [OcrLine.of(boxes, paragraphs[key[:2]]) for key, boxes in lines.items()]
