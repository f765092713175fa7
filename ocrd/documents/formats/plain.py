"""``text``: plain text or markdown in reading order (GOT-OCR2, Qwen and other general VLMs,
Nanonets-OCR2, PaddleOCR-VL's OCR task): the page's markdown as the model wrote it, no boxes."""

from __future__ import annotations

from ocrd.documents.layout import Block, PageLayout


def parse(answer: str, width: int, height: int) -> PageLayout:
    text = answer.strip()
    return PageLayout([Block("text", text)] if text else [], has_boxes=False)
