"""Whether the programs some models need (``requires_binary``: tesseract) are installed.

The answer is asked for on every request to such a model (``Catalog.resolve``) and for every
model listing, and ``shutil.which`` walks ``PATH`` with a ``stat`` per directory, so answers are
kept for ``RECHECK_SECONDS``: long enough that a busy daemon looks once in a while, short enough
that a program installed (or removed) while ocrd runs is noticed without a restart or a reload.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable

RECHECK_SECONDS = 5.0


class ProgramFinder:
    """``shutil.which`` with its answers kept for a few seconds; safe to share between threads
    (the catalog's copies made by ``Catalog.with_extra`` share one)."""

    def __init__(self, *, which: Callable[[str], str | None] = shutil.which,
                 clock: Callable[[], float] = time.monotonic, recheck_seconds: float = RECHECK_SECONDS):
        self._which = which
        self._clock = clock
        self._recheck = recheck_seconds
        self._answers: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def installed(self, command: str) -> bool:
        now = self._clock()
        answer = self._answers.get(command)
        if answer is not None and now - answer[0] < self._recheck:
            return answer[1]
        found = self._which(command) is not None
        with self._lock:
            self._answers[command] = (now, found)
        return found

    def forget(self) -> None:
        """Look again at the next question (after a reload, say)."""
        with self._lock:
            self._answers.clear()
