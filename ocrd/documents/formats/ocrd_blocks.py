"""``ocrd-blocks``: the builtin engine's lines with boxes and confidences (``ocrd.worker.
ocr_lines``), grouped into paragraphs: tesseract's own where it numbers them, else by geometry
(PP-OCR): a line joins the paragraph above it when the gap between them is under
``PARAGRAPH_GAP`` line heights and they overlap horizontally."""

from __future__ import annotations

import json
from typing import Any

from ocrd.documents.layout import Block, Box, PageLayout, union
from ocrd.errors import UpstreamError

PARAGRAPH_GAP = 0.6


def parse(answer: str, width: int, height: int) -> PageLayout:
    try:
        lines = json.loads(answer)["lines"]
        parsed = [(str(line["text"]), _box(line["box"]), float(line["confidence"]), line.get("paragraph"),
                   [(str(w["text"]), float(w["confidence"])) for w in line["words"]]) for line in lines]
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(f"the builtin runner's blocks output is malformed ({exc})") from None
    blocks = []
    for paragraph in _paragraphs(parsed):
        blocks.append(Block("text", "\n".join(line[0] for line in paragraph),
                            union([line[1] for line in paragraph]),
                            [word for line in paragraph for word in line[4]]))
    return PageLayout(blocks, has_boxes=True, has_confidence=True)


def _box(value: Any) -> Box:
    left, top, right, bottom = (int(v) for v in value)
    return left, top, right, bottom


def _paragraphs(lines: list[tuple]) -> list[list[tuple]]:
    paragraphs: list[list[tuple]] = []
    for line in lines:
        last = paragraphs[-1][-1] if paragraphs else None
        if last is not None and _same_paragraph(last, line):
            paragraphs[-1].append(line)
        else:
            paragraphs.append([line])
    return paragraphs


def _same_paragraph(above: tuple, line: tuple) -> bool:
    if above[3] is not None or line[3] is not None:  # the engine numbered them
        return above[3] == line[3]
    (a_left, a_top, a_right, a_bottom), (left, top, right, bottom) = above[1], line[1]
    height = min(a_bottom - a_top, bottom - top)
    overlaps = min(a_right, right) > max(a_left, left)
    return overlaps and height > 0 and 0 <= top - a_bottom < PARAGRAPH_GAP * height
