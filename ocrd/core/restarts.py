"""When to restart a runner that crashed while serving: a backoff that doubles with each restart
in a row, up to the restarts the engine's settings allow (``vllm.restart_attempts``,
``vllm.restart_backoff``).

Pure bookkeeping, per model id: how many restarts in a row, and since when the last runner has
been ready. A runner that stayed up longer than the longest backoff counts as healthy, so the
count starts over; a load or unload a person asks for forgets the count. The scheduler does the
restarting itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Restart:
    delay: float  # seconds to wait before loading again
    number: int   # this restart's place in the row, from 1


class RestartBackoff:
    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._done: dict[str, int] = {}  # restarts in a row, by model id
        self._ready_since: dict[str, float] = {}

    def ready(self, model: str) -> None:
        """A runner of ``model`` became ready."""
        self._ready_since[model] = self._clock()

    def forget(self, model: str) -> None:
        """A person asked for a load or an unload: the next crash starts a fresh row."""
        self._done.pop(model, None)

    def after_crash(self, model: str, attempts: int, base: float) -> Restart | None:
        """The restart due after ``model`` crashed (its last start failed, or it crashed while
        serving), or None once ``attempts`` restarts in a row are spent."""
        ready_since = self._ready_since.pop(model, None)  # None: the last (re)start failed
        if ready_since is not None and self._clock() - ready_since > base * 2**attempts:
            self._done.pop(model, None)
        done = self._done.get(model, 0)
        if done >= attempts:
            return None
        self._done[model] = done + 1
        return Restart(delay=base * 2**done, number=done + 1)
