"""``ocrctl ocr --pages``: which pages of a document to read, in the syntax of Mistral's ``pages``
field (``"0,2-4"``: 0-based numbers and ranges), checked as ocrd checks it.

ocrctl applies the selection itself (it sends the pages one by one), so it has its own copy of the
rules rather than ocrd's ``ocrd.documents.pages``: ocrctl imports none of the daemon's modules.
Pages come out in document order, each once, whatever order or repetitions the selection used.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?\Z")

Ranges = tuple[tuple[int, int], ...]  # (first, last), both included


def parse_pages(text: str) -> Ranges:
    """The ranges ``text`` names; ValueError with one sentence when it is not ``"0,2-4"``-like."""
    ranges = []
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"{text!r} is not a list of page numbers and ranges like '0,2-4' "
                             f"(at {part.strip()!r})")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"the range {part.strip()!r} ends before it starts")
        ranges.append((first, last))
    return tuple(ranges)


def select_pages(ranges: Ranges | None, count: int) -> list[int]:
    """The 0-based pages ``ranges`` selects from a document of ``count`` pages (all when None),
    sorted; ValueError naming the page when one is past the end."""
    if ranges is None:
        return list(range(count))
    for _, last in ranges:
        if last >= count:
            raise ValueError(f"--pages asks for page {last}, but it has {count} page"
                             f"{'' if count == 1 else 's'} (numbered from 0 to {count - 1})")
    return sorted({page for first, last in ranges for page in range(first, last + 1)})
