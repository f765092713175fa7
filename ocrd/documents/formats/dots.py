"""``dots-layout``: dots.ocr's layout parse (its ``prompt_layout_all_en``): one JSON list of
``{"bbox": [x1, y1, x2, y2], "category": ..., "text": ...}`` in reading order; formulas LaTeX,
tables HTML, other text markdown, pictures without text (dots_ocr/utils/prompts.py and
layout_utils.py in rednote-hilab/dots.ocr).

Boxes are in the pixels of the image as the model saw it: Qwen2.5-VL's ``smart_resize`` of the
page (sides rounded to multiples of 28, at most ``MAX_PIXELS``, the limit dots.ocr's card gives),
so they are scaled back to the page's pixels here, as dots.ocr's own post-processing does.
"""

from __future__ import annotations

import json
import math

from ocrd.documents.layout import Block, PageLayout
from ocrd.errors import UpstreamError

FACTOR, MIN_PIXELS, MAX_PIXELS = 28, 3136, 11_289_600
CATEGORIES = {
    "Caption": "caption", "Footnote": "text", "Formula": "equation", "List-item": "list",
    "Page-footer": "footer", "Page-header": "header", "Picture": "image", "Section-header": "title",
    "Table": "table", "Text": "text", "Title": "title",
}


def smart_resize(height: int, width: int) -> tuple[int, int]:
    """Qwen2.5-VL's resize as dots.ocr calls it: (height, width) the model sees."""
    h_bar = max(FACTOR, round(height / FACTOR) * FACTOR)
    w_bar = max(FACTOR, round(width / FACTOR) * FACTOR)
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt(height * width / MAX_PIXELS)
        h_bar = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / FACTOR) * FACTOR
        w_bar = math.ceil(width * beta / FACTOR) * FACTOR
    return h_bar, w_bar


def parse(answer: str, width: int, height: int) -> PageLayout:
    cells = _cells(answer)
    seen_h, seen_w = smart_resize(height, width)
    sx, sy = width / seen_w, height / seen_h
    blocks = []
    for cell in cells:
        category = str(cell.get("category", "Text"))
        kind = CATEGORIES.get(category, "text")
        x1, y1, x2, y2 = (float(v) for v in cell["bbox"])
        box = (_clamp(x1 * sx, width), _clamp(y1 * sy, height), _clamp(x2 * sx, width), _clamp(y2 * sy, height))
        text = str(cell.get("text") or "").strip()
        if kind == "equation" and text and not text.startswith("$$"):
            text = f"$$\n{text}\n$$"
        blocks.append(Block(kind, "" if kind == "image" else text, box))
    return PageLayout(blocks, has_boxes=True)


def _cells(answer: str) -> list[dict]:
    try:
        cells = json.loads(answer)
    except ValueError:
        raise UpstreamError("dots.ocr's layout output is not JSON (cut short by max_tokens, or the "
                            "model lost its way on this page)") from None
    if isinstance(cells, dict):  # the prompt says "a single JSON object"; some answers wrap the list
        cells = next((v for v in cells.values() if isinstance(v, list)), [cells])
    if not isinstance(cells, list) or not all(isinstance(c, dict) and _is_box(c.get("bbox")) for c in cells):
        raise UpstreamError("dots.ocr's layout output is not a list of {bbox, category, text}")
    return cells


def _is_box(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(isinstance(v, int | float) for v in value)


def _clamp(value: float, limit: int) -> int:
    return int(min(max(round(value), 0), limit))
