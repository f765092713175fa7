"""``deepseek-grounding``: DeepSeek-OCR's "<|grounding|>Convert the document to markdown." answer:
each block's markdown preceded by ``<|ref|>TYPE<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>``, the
box on a 0-999 grid over the page (deepseek-ai/DeepSeek-OCR, DeepSeek-OCR-vllm/run_dpsk_ocr_pdf.py
scales by width/999 and height/999), scaled here to the page's pixels."""

from __future__ import annotations

import re

from ocrd.documents.layout import Block, PageLayout

_TAG = re.compile(r"<\|ref\|>(?P<type>.*?)<\|/ref\|><\|det\|>(?P<boxes>.*?)<\|/det\|>", re.S)
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
GRID = 999
TYPES = {
    "title": "title", "sub_title": "title", "text": "text", "table": "table", "image": "image",
    "image_caption": "caption", "table_caption": "caption", "caption": "caption",
    "equation": "equation", "formula": "equation", "header": "header", "page_header": "header",
    "footer": "footer", "page_footer": "footer", "list": "list", "code": "code",
    "reference": "references", "references": "references", "footnote": "text",
}


def parse(answer: str, width: int, height: int) -> PageLayout:
    blocks = []
    matches = list(_TAG.finditer(answer))
    leading = answer[: matches[0].start()].strip() if matches else answer.strip()
    if leading:  # text before the first tag has no box
        blocks.append(Block("text", leading, None))
    ends = [following.start() for following in matches[1:]] + [len(answer)] if matches else []
    for match, end in zip(matches, ends, strict=True):
        content = answer[match.end():end].strip()
        numbers = [float(n) for n in _NUMBERS.findall(match.group("boxes"))][:4]
        box = None
        if len(numbers) == 4:
            x1, y1, x2, y2 = numbers
            box = (_scale(x1, width), _scale(y1, height), _scale(x2, width), _scale(y2, height))
        kind = TYPES.get(match.group("type").strip().lower(), "text")
        blocks.append(Block(kind, "" if kind == "image" else content, box))
    # A block without a box only where no tag was found at all: then the page is plain markdown.
    return PageLayout([b for b in blocks if b.box is not None] or blocks, has_boxes=bool(matches))


def _scale(value: float, side: int) -> int:
    return int(min(max(round(value / GRID * side), 0), side))
