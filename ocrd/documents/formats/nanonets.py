"""``nanonets``: Nanonets-OCR2's markdown with the tags its prompt asks for (the model card's
document prompt): ``<page_number>14</page_number>``, ``<watermark>OFFICIAL COPY</watermark>``,
``<img>a description or the caption</img>``, ``<signature>...</signature>``; tables are HTML,
equations LaTeX, check boxes ☐/☑. The page's paragraphs become blocks (no boxes: the model gives
none): the page number a footer (so ``extract_footer`` works), a watermark aside text, a figure's
description an image's caption, a signature a signature; the tags are gone from the markdown."""

from __future__ import annotations

import re

from ocrd.documents.layout import Block, PageLayout

_TAGGED = re.compile(r"<(?P<tag>page_number|watermark|img|signature)>(?P<text>.*?)</(?P=tag)>", re.S)
KINDS = {"page_number": "footer", "watermark": "aside_text", "img": "caption", "signature": "signature"}


def parse(answer: str, width: int, height: int) -> PageLayout:
    blocks: list[Block] = []
    for paragraph in re.split(r"\n\s*\n", answer.strip()):
        rest = paragraph
        for match in _TAGGED.finditer(paragraph):
            text = " ".join(match.group("text").split())
            blocks.append(Block(KINDS[match.group("tag")], text))
            rest = rest.replace(match.group(0), "")
        rest = rest.strip()
        if rest:
            blocks.append(Block("text", rest))
    return PageLayout(blocks, has_boxes=False)
