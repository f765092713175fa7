"""``doctags``: granite-docling's DocTags (docling-project/docling-core, docling_core/types/doc:
tokens.py and DoclingDocument.load_from_doctags). A page is ``<doctag>...</doctag>`` holding
elements such as ``<text>``, ``<section_header_level_N>``, ``<page_header>``, ``<otsl>`` (a table),
``<picture>`` (with an optional ``<caption>``), ``<list_item>`` inside ``<ordered_list>`` /
``<unordered_list>``; each element opens with four location tokens ``<loc_N>`` (x1, y1, x2, y2 on a
0-500 grid over the page), scaled here to page pixels.

Tables are OTSL: ``<fcel>``/``<ched>``/``<rhed>``/``<srow>`` start a cell with text, ``<ecel>`` an
empty one, ``<lcel>``/``<ucel>``/``<xcel>`` continue a merged cell (here: an empty cell), ``<nl>``
ends a row; they become HTML tables, as the other layout models write theirs. docling-core itself
would do this conversion, but it pins typer and pulls pandas, which the daemon does not need.
"""

from __future__ import annotations

import html
import re

from ocrd.documents.layout import Block, Box, PageLayout
from ocrd.documents.tables import rows_to_html

GRID = 500
_ELEMENT = re.compile(r"<(?P<tag>[a-z_0-9]+)>(?P<body>.*?)</(?P=tag)>", re.S)
_LOC = re.compile(r"<loc_(\d+)>")
_TAG = re.compile(r"<[^>]+>")
_GROUPS = {"doctag", "ordered_list", "unordered_list", "inline", "key_value_region", "form"}
TYPES = {
    "title": "title", "text": "text", "paragraph": "text", "page_header": "header", "page_footer": "footer",
    "formula": "equation", "caption": "caption", "picture": "image", "chart": "image", "list_item": "list",
    "footnote": "text", "code": "code", "otsl": "table", "document_index": "table", "reference": "references",
    "checkbox_selected": "text", "checkbox_unselected": "text", "handwritten_text": "text",
}
_OTSL_CELL = re.compile(r"<(fcel|ecel|ched|rhed|srow|lcel|ucel|xcel|nl)>")


def parse(answer: str, width: int, height: int) -> PageLayout:
    blocks: list[Block] = []
    _walk(answer, width, height, blocks, ordered=None)
    return PageLayout(blocks, has_boxes=any(b.box is not None for b in blocks))


def _walk(text: str, width: int, height: int, blocks: list[Block], ordered: bool | None) -> None:
    for match in _ELEMENT.finditer(text):
        tag, body = match.group("tag"), match.group("body")
        if tag in _GROUPS:
            _walk(body, width, height, blocks, True if tag == "ordered_list" else None if tag == "doctag" else False)
            continue
        box, rest = _location(body, width, height)
        if tag == "otsl":
            caption = _ELEMENT.search(rest)
            cells = rest[: caption.start()] if caption and caption.group("tag") == "caption" else rest
            blocks.append(Block("table", rows_to_html(otsl_rows(cells)), box))
            if caption and caption.group("tag") == "caption":
                _walk(caption.group(0), width, height, blocks, ordered)
        elif tag == "picture" or tag == "chart":
            blocks.append(Block("image", "", box))
            _walk(rest, width, height, blocks, ordered)  # its caption, if any
        elif tag.startswith("section_header_level_"):
            level = int(tag.rsplit("_", 1)[1]) if tag[-1].isdigit() else 1
            blocks.append(Block("title", "#" * min(level + 1, 6) + " " + _text(rest), box))
        else:
            kind = TYPES.get(tag, "text")
            content = _text(rest)
            if kind == "title":
                content = "# " + content
            elif kind == "equation":
                content = f"$$\n{content}\n$$"
            elif kind == "code":
                content = f"```\n{content}\n```"
            elif kind == "list":
                content = ("1. " if ordered else "- ") + content
            elif tag == "checkbox_selected":
                content = "☑ " + content
            elif tag == "checkbox_unselected":
                content = "☐ " + content
            if content:
                blocks.append(Block(kind, content, box))


def _location(body: str, width: int, height: int) -> tuple[Box | None, str]:
    numbers: list[int] = []
    rest = body
    while len(numbers) < 4 and (match := _LOC.match(rest)) is not None:
        numbers.append(int(match.group(1)))
        rest = rest[match.end():]
    if len(numbers) < 4:
        return None, body
    x1, y1, x2, y2 = numbers
    return (_scale(x1, width), _scale(y1, height), _scale(x2, width), _scale(y2, height)), rest


def _scale(value: int, side: int) -> int:
    return int(min(max(round(value / GRID * side), 0), side))


def _text(body: str) -> str:
    return html.unescape(" ".join(_TAG.sub(" ", _LOC.sub("", body)).split()))


def otsl_rows(cells: str) -> list[list[str]]:
    rows: list[list[str]] = [[]]
    parts = _OTSL_CELL.split(cells)
    # parts: [before, token, text, token, text, ...]
    for token, text in zip(parts[1::2], parts[2::2], strict=True):
        if token == "nl":
            rows.append([])
        elif token in ("lcel", "ucel", "xcel", "ecel"):
            rows[-1].append("")
        else:
            rows[-1].append(_text(text))
    return [row for row in rows if row]
