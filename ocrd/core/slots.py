"""Model slots: the scheduler's per-model state, and the read-only snapshots it hands out.

Only the scheduler mutates a ``Slot`` (``ocrd.core.scheduler`` and the parts of it in
``ocrd.core.slot_table`` and ``ocrd.core.loading``); everyone else sees ``SlotInfo``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from ocrd.catalog import CatalogEntry
from ocrd.core.wishes import NO_LOAD_WISH, LoadWish, ModelWishes
from ocrd.events import ModelState
from ocrd.planning.planner import Decision
from ocrd.runners.base import Runner


@dataclass(frozen=True)
class SlotInfo:
    """A read-only snapshot of one slot, for transports."""

    id: str
    aliases: tuple[str, ...]
    description: str
    engine: str
    state: ModelState
    device: str
    pid: int | None
    memory_bytes: int
    pinned: bool
    keep_alive: float
    in_flight: int
    queued: int
    queue_capacity: int
    last_used: float | None  # wall-clock seconds since the epoch
    loaded_at: float | None
    error: str
    replica_pids: tuple[int, ...] = ()  # every runner process of the model ([models.X] replicas)
    license: str | None = None  # the catalog's licence of the weights; None when unknown
    license_note: str | None = None  # what the licence restricts, where it does
    concurrency: int = 1  # requests it serves at once, all replicas together (turns.limit)


@dataclass(frozen=True)
class Commitment:
    """A model this node has undertaken to serve (``Scheduler.committed_models``)."""

    id: str
    state: str  # a ModelState's value, or "unavailable" for a name this host cannot serve
    error: str


@dataclass(frozen=True)
class UnloadResult:
    model: str
    was_loaded: bool
    freed_bytes: int


# The longest a runner is kept free for live traffic after a live request (see Turns).
MAX_LIVE_GRACE = 5.0
LIVE_GAPS = 16  # recent gaps between a live request's end and the next one's arrival
GAP_SHARE = 0.5  # the grace covers this share of those gaps (the median) ...
GAP_MARGIN = 1.25  # ... with this margin


class Turns:
    """At most ``limit`` holders at once, the others served first come, first served; those
    that ask with ``low`` (batch lines) only when nobody else waits.

    A live request therefore never waits behind a batch line that came first, only for turns
    already held (by anyone) to end. On a runner that serves one request at a time, a batch
    line also waits for a grace after a live request ends: as long as live clients have
    recently taken to send their next request (the median gap, with a margin; at least as
    long as the request took, at most ``MAX_LIVE_GRACE``). A client working through its pages
    then finds the runner free instead of half-way through a batch line, which it could not
    interrupt. Batch lines lose that time only while live traffic comes.

    Unlike ``asyncio.Semaphore`` the limit can change while requests hold or wait for a turn (a
    SIGHUP that changes ``max_concurrent_requests``): a lower limit lets the holders finish and
    admits nobody new until they are under it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._low: collections.deque[asyncio.Future[None]] = collections.deque()
        self._grace_until = 0.0  # time.monotonic(): low turns wait until then
        self._grace_timer: asyncio.TimerHandle | None = None
        self._live_ended: float | None = None  # time.monotonic() of the last live turn's end
        self._gaps: collections.deque[float] = collections.deque(maxlen=LIVE_GAPS)

    async def acquire(self, *, low: bool = False) -> None:
        if not low and self._live_ended is not None:
            gap = time.monotonic() - self._live_ended
            if gap < MAX_LIVE_GRACE:  # longer: not the same client's next request
                self._gaps.append(gap)
        if self.active < self.limit and not self._waiters and (
                not low or (not self._low and not self._in_grace())):
            self.active += 1
            return
        queue = self._low if low else self._waiters
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        if low:
            self._admit()  # a free turn held back only by the grace: admitted when it ends
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn was granted as the waiter was cancelled: pass it on
            elif waiter in queue:  # else _admit already dropped it as cancelled
                queue.remove(waiter)
            raise

    def release(self, *, live_seconds: float | None = None) -> None:
        """Ends a turn; ``live_seconds``: a live request's, which took that long."""
        self.active -= 1
        if live_seconds is not None:
            now = time.monotonic()
            self._live_ended = now
            self._grace_until = now + self._grace(live_seconds)
        self._admit()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._admit()

    def _grace(self, live_seconds: float) -> float:
        grace = max(live_seconds, 0.0)
        if self._gaps:
            gaps = sorted(self._gaps)
            grace = max(grace, GAP_MARGIN * gaps[int(GAP_SHARE * (len(gaps) - 1))])
        return min(grace, MAX_LIVE_GRACE)

    def _in_grace(self) -> bool:
        # Runners that serve several at once (vLLM batches) have room for both.
        return self.limit == 1 and time.monotonic() < self._grace_until

    def _admit(self) -> None:
        while self.active < self.limit and (self._waiters or self._low):
            if not self._waiters and self._in_grace():
                self._admit_after_grace()
                return
            waiter = (self._waiters or self._low).popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def _admit_after_grace(self) -> None:
        if self._grace_timer is None:
            delay = self._grace_until - time.monotonic()
            self._grace_timer = asyncio.get_running_loop().call_later(delay, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_timer = None
        self._admit()  # a live request since then has started a new grace: waits on


@dataclass
class Slot:
    entry: CatalogEntry
    engine: str
    # What the settings and the loads ask of the model, resolved once (Scheduler._configure).
    wishes: ModelWishes
    keep_alive: float = 0.0  # these three: from the wishes, see Scheduler._configure
    pinned: bool = False
    queue_capacity: int = 0
    state: ModelState = ModelState.NOT_LOADED
    runner: Runner | None = None
    leases: int = 0
    waiting: int = 0
    error: str = ""
    last_used: float | None = None  # monotonic, from the scheduler's clock
    last_used_wall: float | None = None
    loaded_at_wall: float | None = None
    # Up to `turns.limit` requests run at once on the runner (1 for runners that serve one at a
    # time; many for vLLM, which batches); those waiting for a ready runner or for a turn are
    # what `queue_capacity` bounds.
    turns: Turns = field(default_factory=lambda: Turns(1))
    # Recent request durations, for the Retry-After estimate.
    recent_seconds: float = 1.0
    # What loads asked for (`ocrctl load --mode --quant --pin --keep-alive`): wins over the
    # config until the model unloads.
    load: LoadWish = NO_LOAD_WISH
    # The planner's decision the current (or last) load was made with: engine, device, memory.
    decision: Decision | None = None
    # One per replica (the first is ``decision``): where each runner of the model goes.
    replica_decisions: tuple[Decision, ...] = ()
    # Counted against max_loaded_models from the moment a load begins until the runner is gone.
    holds_room: bool = False
    load_future: asyncio.Future[None] | None = None
    signal: Signal = field(default_factory=lambda: Signal())


class Signal:
    """Wakes every waiter of a slot when its state changes (callable from sync callbacks)."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None

    def wait(self) -> asyncio.Future[None]:
        """The next notify(). Registered when called, not when first awaited, so a notify()
        between the caller's check and its await (e.g. inside wait_for's task) is not lost."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        # shield: a cancelled waiter must not cancel the future the other waiters share.
        return asyncio.shield(self._future)


def is_idle(slot: Slot) -> bool:
    return slot.leases == 0 and slot.waiting == 0


async def drain(slots: list[Slot], timeout: float) -> bool:
    """Waits until no slot of ``slots`` holds a lease; False when ``timeout`` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            for slot in slots:
                while slot.leases:
                    await slot.signal.wait()  # every lease release notifies
    except TimeoutError:
        return False
    return True
