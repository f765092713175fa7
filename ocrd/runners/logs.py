"""The last log lines of a runner, kept in memory, and live followers of them (`ocrctl logs -f`).

A process runner pumps its stderr into a ``LogBuffer``: the buffer keeps the last ``capacity``
lines (each cut to ``MAX_LINE_CHARS``), so a chatty runner cannot grow the daemon's memory. A
follower gets the tail it asked for, then every new line as it comes, and ends once the buffer is
closed (the runner's stderr ended: it stopped or died).

The pump must never wait for a reader: ``append`` only puts the line into each follower's own
bounded backlog. A follower that falls ``backlog`` lines behind loses the oldest ones, and is told
how many it lost in one line of its stream, instead of slowing the runner down.

``runner_lines`` is what `ocrctl logs` shows of any runner (a container runner reads Docker's log
instead of a buffer). Everything runs on the daemon's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocrd.runners.base import Runner

DEFAULT_TAIL = 100  # lines `ocrctl logs` shows when not told how many
DEFAULT_CAPACITY = 1000  # lines a runner keeps for `ocrctl logs`
DEFAULT_BACKLOG = 1000  # lines a follower may fall behind before it loses the oldest
MAX_LINE_CHARS = 4000  # a longer line is cut: one line must not hold megabytes


def skipped_line(count: int) -> str:
    """What a follower reads in place of the lines it was too slow for."""
    return f"[ocrd: {count} log line(s) skipped: this reader fell behind]"


class _Follower:
    def __init__(self, backlog: int):
        self.lines: collections.deque[str] = collections.deque(maxlen=backlog)
        self.skipped = 0
        self.wake = asyncio.Event()

    def put(self, line: str) -> None:
        if len(self.lines) == self.lines.maxlen:
            self.skipped += 1  # the deque drops its oldest line to take this one
        self.lines.append(line)
        self.wake.set()


class LogBuffer:
    """Bounded memory of one runner's log lines, with followers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, backlog: int = DEFAULT_BACKLOG):
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._backlog = backlog
        self._followers: set[_Follower] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, line: str) -> None:
        """Keeps ``line`` and hands it to every follower; never waits."""
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [...]"
        self._lines.append(line)
        for follower in self._followers:
            follower.put(line)

    def tail(self, count: int) -> list[str]:
        """The last ``count`` lines kept, oldest first."""
        if count <= 0:
            return []
        return list(self._lines)[-count:]

    def close(self) -> None:
        """The runner's log ended: followers finish what they have, then stop. Lines stay."""
        self._closed = True
        for follower in self._followers:
            follower.wake.set()

    async def follow(self, tail: int) -> AsyncIterator[str]:
        """The last ``tail`` lines, then each new one until ``close()``."""
        # The tail is taken and the follower registered in one step (no await between), so no
        # line is lost or seen twice at the seam.
        lines = self.tail(tail)
        follower = _Follower(self._backlog)
        if not self._closed:
            self._followers.add(follower)
        try:
            for line in lines:
                yield line
            while True:
                if follower.skipped:
                    count, follower.skipped = follower.skipped, 0
                    yield skipped_line(count)
                if follower.lines:
                    yield follower.lines.popleft()
                    continue
                if self._closed:
                    return
                follower.wake.clear()
                await follower.wake.wait()
        finally:
            self._followers.discard(follower)


async def runner_lines(runner: Runner, tail: int, *, follow: bool) -> AsyncIterator[str]:
    """What `ocrctl logs` shows of ``runner``: its last ``tail`` lines, and with ``follow`` each
    new one until it ends."""
    if follow:
        async for line in runner.follow_logs(tail):
            yield line
        return
    if tail <= 0:
        return  # nothing old asked for, nothing new wanted (a container's "tail 0" means all)
    for line in await runner.logs(tail):
        yield line
