"""What ``ocrctl ocr`` writes: Mistral's OCR response of a whole document made from the answers
for its pages (each page is sent on its own), and that response as markdown or plain text.

- json: Mistral's ``OCRResponse``, pages in document order with their index in the document,
  figures (``img-N.jpeg``) numbered across the document as ocrd numbers them in one request.
- markdown: each page's markdown after a ``<!-- page N -->`` line (N counted from 0, as
  ``--pages`` counts), pages separated by a blank line; an image's markdown as it came.
- text: the markdown reduced to plain lines (no heading marks, emphasis, figure links or HTML
  tags; table cells separated by tabs), pages separated by a form feed as ``pdftotext`` does.
"""

from __future__ import annotations

import html
import re
from typing import Any

from ocrctl.client import CommandError

_FIGURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]*)\)")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>|</(?:tr|p|div|li|h[1-6])\s*>", re.IGNORECASE)
_CELL_END_TAG = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_BLANK_RUNS = re.compile(r"\n{3,}")


def page_of(answer: Any) -> dict[str, Any]:
    """The one page of ocrd's answer for a one-page request; CommandError when it has none."""
    try:
        page = answer["pages"][0]
        if isinstance(page, dict) and isinstance(page["markdown"], str):
            return page
    except (KeyError, IndexError, TypeError):
        pass
    raise CommandError("ocrd's answer has no pages[0].markdown")


def merge_pages(pages: list[tuple[int, dict[str, Any]]], model: str, size: int) -> dict[str, Any]:
    """One ``OCRResponse`` for a document from (page index, page object) in document order;
    ``size``: the document's bytes."""
    merged = []
    figures = 0
    for index, page in pages:
        page = {**page, "index": index}
        figures = _renumber_figures(page, figures)
        merged.append(page)
    return {"pages": merged, "model": model, "document_annotation": None,
            "usage_info": {"pages_processed": len(merged), "doc_size_bytes": size}}


def _renumber_figures(page: dict[str, Any], first: int) -> int:
    """Gives the page's figures the ids ``img-<first>.jpeg``...; returns the next free number."""
    images = page.get("images") or []
    renamed = {image["id"]: f"img-{first + n}.jpeg" for n, image in enumerate(images) if "id" in image}
    if not renamed:
        return first + len(images)
    page["images"] = [{**image, "id": renamed.get(image.get("id"), image.get("id"))} for image in images]

    def link(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        return f"![{renamed.get(alt, alt)}]({renamed.get(target, target)})" if target in renamed else match.group(0)

    page["markdown"] = _FIGURE.sub(link, page["markdown"])
    if isinstance(page.get("blocks"), list):
        page["blocks"] = [{**block, "image_id": renamed[block["image_id"]]}
                          if isinstance(block, dict) and block.get("image_id") in renamed else block
                          for block in page["blocks"]]
    return first + len(images)


def as_markdown(response: dict[str, Any]) -> str:
    return "\n\n".join(f"<!-- page {page['index']} -->\n\n{page['markdown'].strip()}"
                       for page in response["pages"]) + "\n"


def as_text(response: dict[str, Any]) -> str:
    return "\f".join(plain_text(page["markdown"]) for page in response["pages"])


def plain_text(markdown: str) -> str:
    """``markdown`` as plain lines, ending with a newline (see the module's doc)."""
    text = _FIGURE.sub("", markdown)
    text = _LINE_BREAK_TAG.sub("\n", text)
    text = _CELL_END_TAG.sub("\t", text)
    text = html.unescape(_TAG.sub("", text))
    text = _EMPHASIS.sub(r"\2", _HEADING.sub("", text))
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip() + "\n"
