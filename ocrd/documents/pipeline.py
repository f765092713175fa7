"""The page pipeline: pages rendered lazily, read concurrently, handed back in document order.

At most ``concurrency`` pages are between "start rendering" and "handed back" at a time, so a
500-page PDF never sits in memory as 500 pages: the next page is rendered only when an earlier
one is done with. Each page is read through the model's lease like any chat request (the
scheduler's turns decide how many really run at once; a vLLM model batches them).

A page whose reading fails on the server's side (the runner crashed, timed out, answered 5xx) is
tried again, up to ``attempts`` tries in all; then the request fails naming the page. Other
errors (the client's own, a full queue, a model that does not fit) are not retried.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ocrd.errors import OcrdError, RunnerUnreachable, UpstreamError, UpstreamTimeout

# Before a page is tried again: time for the scheduler to notice a runner that died and start
# its successor (the next try waits for it to be ready), times the try's number.
RETRY_PAUSE_S = 0.5

Result = TypeVar("Result")


async def pipeline(pages: list[int], work: Callable[[int], Awaitable[Result]], concurrency: int,
                   attempts: int) -> AsyncIterator[tuple[int, Result]]:
    """``(page, work(page))`` for each page in order; ``work`` renders and reads one page."""
    pending: collections.deque[tuple[int, asyncio.Task[Result]]] = collections.deque()
    upcoming = iter(pages)
    try:
        while True:
            while len(pending) < concurrency and (page := next(upcoming, None)) is not None:
                pending.append((page, asyncio.ensure_future(_tried(page, work, attempts))))
            if not pending:
                return
            page, task = pending.popleft()
            yield page, await task
    finally:
        for _, task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*(task for _, task in pending), return_exceptions=True)


async def _tried(page: int, work: Callable[[int], Awaitable[Result]], attempts: int) -> Result:
    for attempt in range(1, attempts + 1):
        try:
            return await work(page)
        except OcrdError as exc:
            if not _retryable(exc):
                raise
            if attempt == attempts:
                tries = "once" if attempts == 1 else f"{attempts} times"
                raise UpstreamError(f"page {page} failed {tries}: {exc.message}") from exc
            await asyncio.sleep(RETRY_PAUSE_S * attempt)
    raise AssertionError("unreachable")  # attempts >= 1


def _retryable(exc: OcrdError) -> bool:
    # The runner broke or was too slow; a model that does not fit (507), an engine that is not
    # there (503) or ocrd shutting down would fail the same way again.
    return isinstance(exc, UpstreamError | UpstreamTimeout | RunnerUnreachable)
