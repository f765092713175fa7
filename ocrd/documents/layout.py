"""What a page became, whatever model read it: typed blocks in reading order, and Mistral's page.

Every output parser (``ocrd.documents.formats``) produces a ``PageLayout``; ``page_object``
turns it into Mistral's ``OCRPageObject`` for the request's options. Block types are Mistral's
(``text``, ``title``, ``table``, ``list``, ``caption``, ``equation``, ``image``, ``header``,
``footer``, ``code``, ``references``, ``signature``, ``aside_text``), boxes in the page image's
pixels, confidences 0-1 where the engine gives them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocrd.documents.tables import TableCollector

BLOCK_TYPES = ("text", "title", "table", "list", "caption", "equation", "image", "header", "footer",
               "code", "references", "signature", "aside_text")
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), page pixels
_WORD = re.compile(r"\S+")


@dataclass
class Block:
    type: str
    content: str  # markdown (tables: HTML or markdown as the model wrote them)
    box: Box | None = None
    # Per word, in order: (word, confidence); None where the engine gives no confidences.
    words: list[tuple[str, float]] | None = None


@dataclass
class PageLayout:
    """One page as a model read it. ``blocks`` with boxes when the model gives a layout; a model
    that writes plain markdown gives one block without a box (``has_boxes`` False)."""

    blocks: list[Block]
    has_boxes: bool
    has_confidence: bool = False
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. olmOCR's front matter
    # Degrees (counter-clockwise) the model turned the page to read it upright; boxes are in the
    # turned page's pixels (the builtin engines' orientation step).
    rotation: int = 0


@dataclass(frozen=True)
class PageOptions:
    """What the request asked of every page (Mistral's fields)."""

    include_blocks: bool = True
    extract_header: bool = False
    extract_footer: bool = False
    include_image_base64: bool = False
    image_limit: int | None = None
    image_min_size: int | None = None
    confidence: str | None = None  # "page" | "block" | "word"


def page_object(index: int, layout: PageLayout, dimensions: dict[str, int], options: PageOptions,
                images: list[dict[str, Any]], tables: TableCollector | None = None) -> dict[str, Any]:
    """Mistral's ``OCRPageObject`` for one page. ``images``: the figure crops already made
    (``image`` blocks, in order), each with its ``id``; ``tables``: with ``table_format``, takes
    the tables out of the markdown."""
    markdown_parts: list[str] = []
    word_scores: list[dict[str, Any]] = []
    header: list[str] = []
    footer: list[str] = []
    blocks: list[dict[str, Any]] = []
    page_tables: list[dict[str, str]] = []
    figure = 0
    offset = 0
    for block in layout.blocks:
        image_id = None
        if block.type == "image":
            image_id = images[figure]["id"] if figure < len(images) else None
            figure += 1
        table_id = None
        if tables is not None:
            content, found = tables.extract(block.content)
            page_tables += found
            if block.type == "table" and len(found) == 1:
                table_id = found[0]["id"]
            block = Block(block.type, content, block.box, block.words)
        if block.type == "header" and options.extract_header:
            header.append(block.content)
        elif block.type == "footer" and options.extract_footer:
            footer.append(block.content)
        else:
            text = f"![{image_id}]({image_id})" if image_id and not block.content else block.content
            if text:
                if markdown_parts:
                    offset += 2  # the blank line between blocks
                if block.words is not None:
                    word_scores += _word_scores(text, block.words, offset)
                markdown_parts.append(text)
                offset += len(text)
        if block.box is not None:
            blocks.append(_block_object(block, image_id, table_id, options))
    page: dict[str, Any] = {
        "index": index, "markdown": "\n\n".join(markdown_parts), "images": images,
        "dimensions": dimensions, "tables": page_tables, "hyperlinks": [],
        "header": "\n\n".join(header) if header else None,
        "footer": "\n\n".join(footer) if footer else None,
    }
    if options.include_blocks:
        page["blocks"] = blocks if layout.has_boxes else None
    if options.confidence:
        page["confidence_scores"] = _page_confidence(layout, word_scores, options.confidence)
    return page


def _block_object(block: Block, image_id: str | None, table_id: str | None, options: PageOptions
                  ) -> dict[str, Any]:
    assert block.box is not None
    left, top, right, bottom = block.box
    result: dict[str, Any] = {"type": block.type, "content": block.content, "top_left_x": left,
                              "top_left_y": top, "bottom_right_x": right, "bottom_right_y": bottom}
    if block.type == "image":
        result["image_id"] = image_id or ""
    if table_id is not None:
        result["table_id"] = table_id
    if options.confidence == "block":
        scores = [score for _, score in block.words or []]
        result["confidence_scores"] = {
            "average_content_confidence_score": sum(scores) / len(scores) if scores else None,
            "minimum_content_confidence_score": min(scores) if scores else None,
            "block_type_confidence_score": None,
        }
    return result


def _word_scores(text: str, words: list[tuple[str, float]], offset: int) -> list[dict[str, Any]]:
    """Each word's confidence and where it starts in the page's markdown: the words are found
    in order in ``text`` (a word the markdown does not contain keeps the search where it was)."""
    scores = []
    at = 0
    for word, confidence in words:
        found = text.find(word, at)
        if found < 0:
            continue
        scores.append({"text": word, "confidence": round(confidence, 4), "start_index": offset + found})
        at = found + len(word)
    return scores


def _page_confidence(layout: PageLayout, word_scores: list[dict[str, Any]], granularity: str
                     ) -> dict[str, Any]:
    all_words = [score for block in layout.blocks for _, score in block.words or []]
    result: dict[str, Any] = {
        "average_page_confidence_score": round(sum(all_words) / len(all_words), 4) if all_words else 0.0,
        "minimum_page_confidence_score": round(min(all_words), 4) if all_words else 0.0,
    }
    if granularity == "word":
        result["word_confidence_scores"] = word_scores
    return result


def union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def count_words(text: str) -> int:
    return len(_WORD.findall(text))
