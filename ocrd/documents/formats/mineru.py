"""``mineru-layout``: MinerU2.5's two-step protocol (opendatalab/mineru-vl-utils,
mineru_vl_utils/mineru_client.py, Apache-2.0): the page, resized to ``LAYOUT_SIZE``, is asked for its
layout (``\\nLayout Detection:``): one ``<|box_start|>x1 y1 x2 y2<|box_end|><|ref_start|>TYPE
<|ref_end|>`` per block, coordinates 0-1000 over the page, an optional ``<|rotate_*|>``; then each
block, cropped from the full page (at least ``MIN_EDGE`` px a side, turned upright), is asked for
its content with its type's preset: tables (OTSL, made HTML here), formulas (LaTeX), text. Lists,
equation and image containers, images and charts are not asked (the client's defaults, image
analysis off)."""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import Awaitable, Callable

from PIL import Image

from ocrd.documents.formats.doctags import otsl_rows
from ocrd.documents.layout import Block, PageLayout
from ocrd.documents.tables import rows_to_html

LAYOUT_SIZE = (1036, 1036)
MIN_EDGE, MAX_EDGE_RATIO = 28, 50
_LAYOUT = re.compile(r"<\|box_start\|>(\d+)\s+(\d+)\s+(\d+)\s+(\d+)<\|box_end\|><\|ref_start\|>(\w+?)<\|ref_end\|>"
                     r"(?:<\|rotate_(up|right|down|left)\|>)?")
_ANGLE = {"up": 0, "right": 90, "down": 180, "left": 270}
SKIPPED = {"list", "equation_block", "image_block", "image", "chart"}
PRESET_OF = {"table": "table", "equation": "formula"}  # the rest: "text"
TYPES = {
    "text": "text", "title": "title", "doc_title": "title", "paragraph_title": "title", "table": "table",
    "equation": "equation", "code": "code", "algorithm": "code", "aside_text": "aside_text",
    "ref_text": "references", "list_item": "list", "table_caption": "caption", "image_caption": "caption",
    "code_caption": "caption", "caption": "caption", "header": "header", "footer": "footer",
    "page_number": "footer", "image": "image", "chart": "image", "unknown": "image",
}

# (preset, PNG) -> the model's answer
Ask = Callable[[str, bytes], Awaitable[str]]


def layout_blocks(answer: str) -> list[tuple[str, tuple[float, float, float, float], int]]:
    """(type, box as fractions of the page, degrees to turn upright) for each block."""
    blocks = []
    for match in _LAYOUT.finditer(answer):
        x1, y1, x2, y2 = (int(v) for v in match.group(1, 2, 3, 4))
        kind = match.group(5).lower()
        if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000) or kind == "inline_formula":
            continue
        blocks.append((kind, (x1 / 1000, y1 / 1000, x2 / 1000, y2 / 1000), _ANGLE.get(match.group(6) or "up", 0)))
    return blocks


async def read(png: bytes, width: int, height: int, ask: Ask, concurrency: int) -> PageLayout:
    page = Image.open(io.BytesIO(png)).convert("RGB")
    layout = await ask("layout", _png(page.resize(LAYOUT_SIZE, Image.Resampling.BICUBIC)))
    found = layout_blocks(layout)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def content(kind: str, fraction: tuple[float, float, float, float], angle: int) -> Block:
        x1, y1, x2, y2 = fraction
        box = (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))
        mapped = TYPES.get(kind, "text")
        if kind in SKIPPED:
            return Block(mapped, "", box)
        crop = _upright(page.crop(box), angle)
        async with gate:
            answer = await ask(PRESET_OF.get(kind, "text"), _png(crop))
        return Block(mapped, _markdown(mapped, answer.strip()), box)

    blocks = await asyncio.gather(*(content(*block) for block in found))
    return PageLayout([b for b in blocks if b.content or b.type == "image"], has_boxes=True)


def _markdown(kind: str, text: str) -> str:
    if kind == "table" and any(token in text for token in ("<fcel>", "<ecel>", "<nl>")):
        return rows_to_html(otsl_rows(text))
    if kind == "equation":
        return f"$$\n{text.strip('$').strip()}\n$$"
    if kind == "title":
        return "# " + " ".join(text.split())
    if kind == "code":
        return f"```\n{text}\n```"
    return text


def _upright(crop: Image.Image, angle: int) -> Image.Image:
    if angle:
        crop = crop.rotate(angle, expand=True)
    ratio = max(crop.size) / max(1, min(crop.size))
    if ratio > MAX_EDGE_RATIO:  # padded to at most 1:50 with white, as the client does
        w, h = crop.size
        size = (w, math.ceil(w / MAX_EDGE_RATIO)) if w > h else (math.ceil(h / MAX_EDGE_RATIO), h)
        padded = Image.new("RGB", size, "white")
        padded.paste(crop, ((size[0] - w) // 2, (size[1] - h) // 2))
        crop = padded
    if min(crop.size) < MIN_EDGE:
        scale = MIN_EDGE / min(crop.size)
        crop = crop.resize((math.ceil(crop.width * scale), math.ceil(crop.height * scale)), Image.Resampling.BICUBIC)
    return crop


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
