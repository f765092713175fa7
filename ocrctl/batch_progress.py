"""How far a batch is, in words: lines done of total, failed, lines per second and the time left.

The rate is what this watcher saw over the last minute (a batch that waited behind another, or
ran across a daemon restart, would mislead with an average since it started); before a watcher
has seen two seconds of it, and for ``batch show``, it is the average since ``in_progress``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from ocrctl import render
from ocrd.control.v1 import control_pb2 as pb

WINDOW = 60.0  # seconds of samples the rate is read from
_LEAST_SPAN = 2.0


class Rate:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, batch: pb.Batch) -> None:
        now = self._clock()
        self._samples.append((now, batch.completed + batch.failed))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW:
            self._samples.popleft()

    def per_second(self, batch: pb.Batch) -> float | None:
        """Lines a second; None when nothing can be said yet."""
        if len(self._samples) >= 2:
            (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
            if t1 - t0 >= _LEAST_SPAN:
                return (n1 - n0) / (t1 - t0)
        return average_rate(batch, self._clock())


def average_rate(batch: pb.Batch, now: float) -> float | None:
    started = render.timestamp_or_none(batch, "in_progress_at")
    done = batch.completed + batch.failed
    if started is None or now - started < 1.0 or not done:
        return None
    return done / (now - started)


def summary(batch: pb.Batch, rate: float | None) -> str:
    """``in_progress 120/300 lines, 2 failed, 4.1/s, 44s left``."""
    done = batch.completed + batch.failed
    words = [batch.status]
    if batch.status == "validating" and not batch.total:
        words.append("(reading its input, or waiting for an earlier batch)")
    elif batch.total:
        words.append(f"{done}/{batch.total} lines")
        if batch.failed:
            words[-1] += f", {batch.failed} failed"
    if not batch.ended and batch.status == "in_progress" and rate is not None:
        words[-1] += f", {rate:.1f}/s" if rate >= 0.95 else f", {rate * 60:.1f}/min"
        left = batch.total - done
        if rate > 0 and left > 0:
            words[-1] += f", {render.duration(left / rate)} left"
    return " ".join(words)


def fraction(batch: pb.Batch) -> float:
    return (batch.completed + batch.failed) / batch.total if batch.total else -1.0
