"""Reading order of a page's blocks by recursive XY-cut: the blocks are split in two at the widest
gap that no block crosses, across the page (a row of whitespace) or down it (a column gutter),
whichever is wider, and each side is ordered the same way; blocks that no gap separates read top
to bottom, left to right. A heading across two columns stays above them, and each column is read
to its end before the next (the gutter between columns is wider than the space between their
paragraphs)."""

from __future__ import annotations

from collections.abc import Sequence

from ocrd.documents.layout import Box


def reading_order(boxes: Sequence[Box]) -> list[int]:
    """The indexes of ``boxes`` in reading order."""
    return _cut(list(range(len(boxes))), boxes)


def _cut(items: list[int], boxes: Sequence[Box]) -> list[int]:
    if len(items) <= 1:
        return items
    # (gap width, axis, the items before the gap, the items after it); y first on a tie.
    best = max((_widest_gap(items, boxes, axis) for axis in (1, 0)), key=lambda cut: cut[0])
    width, _axis, before, after = best
    if width <= 0:
        return sorted(items, key=lambda i: (boxes[i][1], boxes[i][0]))
    return _cut(before, boxes) + _cut(after, boxes)


def _widest_gap(items: list[int], boxes: Sequence[Box], axis: int) -> tuple[float, int, list[int], list[int]]:
    """The widest gap along ``axis`` (0: x, 1: y) that no box of ``items`` crosses."""
    ordered = sorted(items, key=lambda i: boxes[i][axis])
    best: tuple[float, int, list[int], list[int]] = (0, axis, ordered, [])
    end = boxes[ordered[0]][axis + 2]
    for position in range(1, len(ordered)):
        start = boxes[ordered[position]][axis]
        if start - end > best[0]:
            best = (start - end, axis, ordered[:position], ordered[position:])
        end = max(end, boxes[ordered[position]][axis + 2])
    return best
