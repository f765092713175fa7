"""Page selection and the page pipeline (order, bounded concurrency, retries)."""

from __future__ import annotations

import asyncio

import pytest

from ocrd.documents.pages import select_pages
from ocrd.documents.pdf import RenderPolicy
from ocrd.documents.pipeline import pipeline
from ocrd.errors import InvalidRequest, UpstreamError


@pytest.mark.parametrize(("pages", "count", "expected"), [
    (None, 3, [0, 1, 2]), ("0,2-4", 5, [0, 2, 3, 4]), ("3, 1 - 2,1", 4, [1, 2, 3]), ([2, 0, 2], 3, [0, 2]),
    ("0-0", 1, [0]),
])
def test_pages_are_selected_in_document_order_each_once(pages, count, expected):
    assert select_pages(pages, count) == expected


@pytest.mark.parametrize(("pages", "words"), [
    ("0-999999999", "has 3 pages"), ([5], "has 3 pages"), ("2-1", "ends before"), ("a", "ranges like"),
    ([-1], "from 0 up"), ([True], "from 0 up"), ([], "selects no page"), ("", "ranges like"),
])
def test_bad_page_selections_say_what_is_wrong(pages, words):
    with pytest.raises(InvalidRequest, match=words):
        select_pages(pages, 3)


def test_render_policy_dpi_longest_side_and_cap():
    a4 = (595.28, 841.89)
    assert RenderPolicy(dpi=144).scale(*a4) == 2.0
    assert RenderPolicy(dpi=None, longest_side=1288).scale(*a4) * a4[1] == pytest.approx(1288)
    assert RenderPolicy(dpi=600, max_side=4500).scale(*a4) * a4[1] == pytest.approx(4500)


async def test_pages_come_back_in_order_with_at_most_concurrency_in_flight():
    running, peak = 0, 0

    async def work(page: int) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - page % 5))  # later pages finish first
        running -= 1
        return f"page {page}"

    results = [item async for item in pipeline(list(range(12)), work, concurrency=3, attempts=1)]
    assert results == [(p, f"page {p}") for p in range(12)]
    assert peak == 3


async def test_a_failing_page_is_tried_again_then_fails_naming_the_page():
    tries: dict[int, int] = {}

    async def work(page: int) -> int:
        tries[page] = tries.get(page, 0) + 1
        if page == 1 and tries[page] == 1:
            raise UpstreamError("the runner crashed")
        if page == 2:
            raise UpstreamError("the runner crashed again")
        return page

    with pytest.raises(UpstreamError, match="page 2 failed 2 times: the runner crashed again"):
        [item async for item in pipeline([0, 1, 2, 3], work, concurrency=2, attempts=2)]
    assert tries[1] == 2 and tries[2] == 2


async def test_a_client_error_is_not_retried_and_cancels_the_pages_in_flight():
    cancelled = []

    async def work(page: int) -> int:
        if page == 0:
            raise InvalidRequest("bad page")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(page)
            raise
        return page

    with pytest.raises(InvalidRequest):
        [item async for item in pipeline([0, 1, 2], work, concurrency=3, attempts=2)]
    assert sorted(cancelled) == [1, 2]
