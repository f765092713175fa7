"""Which pages of a document a request asks for: Mistral's ``pages`` field.

Mistral's API takes a list of 0-based page numbers or a string of numbers and ranges
(``"0,2-4"``). Pages come back in the order of the document, each once, whatever order or
repetitions the request used; a page past the end is a 400 that says how many pages there are.
"""

from __future__ import annotations

import re

from ocrd.errors import InvalidRequest

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?\Z")


def select_pages(pages: str | list[int] | None, count: int) -> list[int]:
    """The 0-based page numbers ``pages`` selects from a document of ``count`` pages, sorted."""
    if pages is None:
        return list(range(count))
    wanted = _parse(pages, count) if isinstance(pages, str) else set(_checked_ints(pages, count))
    if not wanted:
        raise InvalidRequest("pages selects no page; leave it out to OCR every page", param="pages")
    return sorted(wanted)


def _checked_ints(pages: list[int], count: int) -> list[int]:
    for page in pages:
        if isinstance(page, bool) or not isinstance(page, int) or page < 0:
            raise InvalidRequest(f"pages must be page numbers from 0 up; got {page!r}", param="pages")
        _check_within(page, count)
    return pages


def _check_within(page: int, count: int) -> None:
    if page >= count:
        raise InvalidRequest(
            f"pages asks for page {page}, but the document has {count} page"
            f"{'' if count == 1 else 's'} (numbered from 0 to {count - 1})", param="pages")


def _parse(text: str, count: int) -> set[int]:
    wanted: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise InvalidRequest(
                f"pages {text!r} is not a list of page numbers and ranges like '0,2-4' "
                f"(at {part.strip()!r})", param="pages")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise InvalidRequest(f"pages: the range {part.strip()!r} ends before it starts", param="pages")
        _check_within(last, count)  # before the range is made: "0-999999999" costs nothing
        wanted.update(range(first, last + 1))
    return wanted
