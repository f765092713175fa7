"""``ThrottledLog``: the first few lines of a repeated event, then one summary line a period.

Events an outsider can cause at will (refused API keys, accept() failing when descriptors run
out) must not be able to flood the journal: each would otherwise cost a line, and an attack is
thousands a second. So the first ``burst`` events of each ``interval`` are logged as they come;
the rest are counted, and the count is logged once the interval is over ("1732 more ... in the
last 60 s"). The summary is written by a timer on the running event loop (so a burst that stops
is still reported), or by the next event when there is no loop, and by ``flush_all`` when the
daemon stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable


class ThrottledLog:
    _live: weakref.WeakSet[ThrottledLog] = weakref.WeakSet()

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger = logger
        self._what = what  # plural noun phrase for the summary: "refused HTTP requests"
        self._level = level
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None
        ThrottledLog._live.add(self)

    @classmethod
    def flush_all(cls) -> None:
        """Every summary still pending (at shutdown: the last counts are not lost)."""
        for throttled in list(cls._live):
            throttled.flush()

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._window_start >= self._interval:
            self.flush()
            self._window_start, self._logged = now, 0
        if self._logged < self._burst:
            self._logged += 1
            self._logger.log(self._level, message, *args)
            return
        self._suppressed += 1
        if self._suppressed == 1:
            self._schedule_flush(self._window_start + self._interval - now)

    @property
    def suppressed(self) -> int:
        """Events counted but not logged yet (the next summary's number)."""
        return self._suppressed

    def flush(self) -> None:
        """Logs the summary of what was not logged, if anything was left out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            self._logger.log(self._level, "%d more %s in the last %g s were not logged one by one",
                             self._suppressed, self._what, self._interval)
            self._suppressed = 0

    def _schedule_flush(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a thread, a test): the next event after the interval flushes
        self._timer = loop.call_later(max(delay, 0.0), self.flush)
