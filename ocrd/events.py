"""Events: every model transition and notable decision, fanned out to subscribers.

The scheduler publishes; ``WatchEvents`` streams, the log and the sd_notify STATUS= line subscribe.
A subscriber that does not keep up loses its oldest events (it is told how many through a
``events.dropped`` event) rather than slowing the publisher down.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ocrd.events")


class ModelState(enum.Enum):
    """The lifecycle of a model slot (mirrors ``ocrd.v1.ModelState``)."""

    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(frozen=True)
class Event:
    kind: str
    model: str = ""
    state: ModelState | None = None
    message: str = ""
    progress: float = -1.0
    stage: str = ""
    sequence: int = 0
    time: float = field(default_factory=time.time)


class EventBus:
    def __init__(self, subscriber_buffer: int = 1024):
        self._sequence = itertools.count(1)
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._listeners: list[Callable[[Event], None]] = []
        self._buffer = subscriber_buffer

    def publish(self, event: Event) -> Event:
        stamped = Event(
            kind=event.kind,
            model=event.model,
            state=event.state,
            message=event.message,
            progress=event.progress,
            stage=event.stage,
            sequence=next(self._sequence),
            time=event.time,
        )
        for listener in list(self._listeners):
            try:
                listener(stamped)
            except Exception:  # a broken listener must not break the scheduler
                log.exception("event listener failed")
        for subscription in list(self._subscribers):
            subscription.offer(stamped)
        return stamped

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Synchronous callback for every event (logging, sd_notify STATUS, metrics)."""
        self._listeners.append(listener)

    def subscribe(self, model: str | None = None) -> Subscription:
        """Events from this moment on (only ``model``'s when given), as an async iterator.

        Registered at once, so nothing published after this call is missed. The bus holds
        subscriptions weakly: a reader that drops its subscription is forgotten with it.
        """
        subscription = Subscription(self._buffer, model)
        self._subscribers.add(subscription)
        return subscription


class Subscription:
    def __init__(self, size: int, model: str | None):
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self._model = model
        self._dropped = 0

    def offer(self, event: Event) -> None:
        if self._model and event.model and event.model != self._model:
            return
        if self._model and not event.model and not event.kind.startswith("daemon."):
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.next()

    async def next(self) -> Event:
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return Event(kind="events.dropped", message=f"{dropped} events dropped: reader too slow")
        return await self._queue.get()

    async def next_until(self, done: asyncio.Future[Any]) -> Event | None:
        """The next event, or None once ``done`` is done and no event is queued (a load's
        progress, read until the load ends). ``done`` is never cancelled: a reader that goes
        away leaves the load running."""
        reader = asyncio.ensure_future(self.next())
        try:
            await asyncio.wait({reader, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not reader.done():
                reader.cancel()
        # A queued event completes the reader before the done future wakes us, so none is skipped.
        return reader.result() if reader.done() else None
