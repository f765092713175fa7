"""The event bus (ocrd.events): sequence numbers, subscriptions, per-model filtering, slow
readers losing their oldest events instead of blocking the publisher, weak subscriptions and
listeners that fail."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest

from ocrd.events import Event, EventBus, ModelState

# A safety net so that a broken bus fails the test instead of hanging it; never asserted on.
SAFETY_TIMEOUT = 5.0


async def next_event(subscription) -> Event:
    return await asyncio.wait_for(subscription.next(), SAFETY_TIMEOUT)


def model_event(model: str, message: str = "", kind: str = "model.state") -> Event:
    return Event(kind=kind, model=model, state=ModelState.LOADING, message=message)


# --- sequence numbers ---------------------------------------------------------------------------


def test_publish_stamps_increasing_sequence_numbers() -> None:
    bus = EventBus()

    stamped = [bus.publish(Event(kind="daemon.started", sequence=99)) for _ in range(5)]

    assert [event.sequence for event in stamped] == [1, 2, 3, 4, 5]


def test_publish_keeps_every_other_field() -> None:
    bus = EventBus()
    event = Event(
        kind="model.progress", model="org/m", state=ModelState.LOADING,
        message="weights", progress=0.5, stage="download", time=123.0,
    )  # fmt: skip

    stamped = bus.publish(event)

    assert stamped == Event(
        kind="model.progress", model="org/m", state=ModelState.LOADING,
        message="weights", progress=0.5, stage="download", time=123.0, sequence=1,
    )  # fmt: skip


async def test_subscriber_sees_the_same_sequence_numbers_in_order() -> None:
    bus = EventBus()
    subscription = bus.subscribe()

    published = [bus.publish(model_event("org/m", str(i))) for i in range(3)]

    received = [await next_event(subscription) for _ in range(3)]
    assert received == published
    assert [event.sequence for event in received] == [1, 2, 3]


# --- subscriptions ------------------------------------------------------------------------------


async def test_subscription_sees_events_published_after_subscribe_and_none_before() -> None:
    bus = EventBus()
    bus.publish(model_event("org/m", "before"))

    subscription = bus.subscribe()
    # Published before the reader ever awaits: still delivered.
    bus.publish(model_event("org/m", "after-1"))
    bus.publish(model_event("org/m", "after-2"))

    assert (await next_event(subscription)).message == "after-1"
    assert (await next_event(subscription)).message == "after-2"


async def test_waiting_reader_is_woken_by_a_publish() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    reader = asyncio.create_task(next_event(subscription))
    await asyncio.sleep(0)
    assert not reader.done()

    bus.publish(model_event("org/m", "hello"))

    assert (await reader).message == "hello"


async def test_every_subscriber_gets_every_event() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()

    bus.publish(model_event("org/a", "x"))

    assert (await next_event(first)).message == "x"
    assert (await next_event(second)).message == "x"


async def test_subscription_is_an_async_iterator() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    for i in range(3):
        bus.publish(model_event("org/m", str(i)))

    seen = []
    async for event in subscription:
        seen.append(event.message)
        if len(seen) == 3:
            break

    assert seen == ["0", "1", "2"]


async def test_model_filter_passes_own_model_and_daemon_events_only() -> None:
    bus = EventBus()
    subscription = bus.subscribe("org/a")

    bus.publish(model_event("org/b", "other model"))
    bus.publish(Event(kind="scheduler.note", message="modelless, not daemon.*"))
    bus.publish(Event(kind="daemon.reloading", message="daemon"))
    bus.publish(model_event("org/a", "mine"))

    assert (await next_event(subscription)).message == "daemon"
    assert (await next_event(subscription)).message == "mine"
    # Nothing else was queued: the next event is the next one published for org/a.
    bus.publish(model_event("org/b", "other again"))
    bus.publish(model_event("org/a", "mine again"))
    assert (await next_event(subscription)).message == "mine again"


async def test_unfiltered_subscription_sees_every_model() -> None:
    bus = EventBus()
    subscription = bus.subscribe()

    bus.publish(model_event("org/a", "a"))
    bus.publish(model_event("org/b", "b"))
    bus.publish(Event(kind="scheduler.note", message="none"))

    assert [(await next_event(subscription)).message for _ in range(3)] == ["a", "b", "none"]


# --- slow subscribers ---------------------------------------------------------------------------


async def test_slow_subscriber_loses_the_oldest_events_and_is_told_how_many() -> None:
    bus = EventBus(subscriber_buffer=3)
    subscription = bus.subscribe()

    # The publisher is synchronous: if a full buffer blocked it, this loop would never end.
    published = [bus.publish(model_event("org/m", str(i))) for i in range(10)]

    notice = await next_event(subscription)
    assert notice.kind == "events.dropped"
    assert "7 events dropped" in notice.message
    kept = [await next_event(subscription) for _ in range(3)]
    assert kept == published[-3:]  # the newest survive

    # One notice only: the next event is an ordinary one.
    later = bus.publish(model_event("org/m", "later"))
    assert await next_event(subscription) == later


async def test_dropped_count_starts_again_after_the_notice() -> None:
    bus = EventBus(subscriber_buffer=2)
    subscription = bus.subscribe()
    for i in range(5):
        bus.publish(model_event("org/m", str(i)))
    assert "3 events dropped" in (await next_event(subscription)).message
    await next_event(subscription)
    await next_event(subscription)

    for i in range(3):
        bus.publish(model_event("org/m", str(i)))

    assert "1 events dropped" in (await next_event(subscription)).message


async def test_slow_subscriber_does_not_affect_a_fast_one() -> None:
    bus = EventBus(subscriber_buffer=2)
    slow, fast = bus.subscribe(), bus.subscribe()

    for i in range(4):
        bus.publish(model_event("org/m", str(i)))
        assert (await next_event(fast)).message == str(i)

    assert (await next_event(slow)).kind == "events.dropped"


async def test_filtered_out_events_do_not_fill_the_buffer() -> None:
    bus = EventBus(subscriber_buffer=2)
    subscription = bus.subscribe("org/a")

    for i in range(10):
        bus.publish(model_event("org/b", str(i)))
    bus.publish(model_event("org/a", "mine"))

    first = await next_event(subscription)
    assert first.kind != "events.dropped"
    assert first.message == "mine"


# --- weak subscriptions -------------------------------------------------------------------------


async def test_bus_forgets_a_subscription_its_reader_dropped() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    ref = weakref.ref(subscription)

    del subscription
    gc.collect()

    assert ref() is None  # the bus did not keep it alive
    kept = bus.subscribe()
    bus.publish(model_event("org/m", "still works"))
    assert (await next_event(kept)).message == "still works"


# --- listeners ----------------------------------------------------------------------------------


async def test_listener_is_called_synchronously_with_the_stamped_event() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.add_listener(seen.append)

    stamped = bus.publish(model_event("org/m"))

    assert seen == [stamped]


async def test_raising_listener_does_not_stop_other_listeners_or_subscribers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(seen.append)

    with caplog.at_level(logging.ERROR, logger="ocrd.events"):
        stamped = bus.publish(model_event("org/m", "survives"))
        again = bus.publish(model_event("org/m", "again"))

    assert seen == [stamped, again]
    assert await next_event(subscription) == stamped
    assert await next_event(subscription) == again
    failures = [r for r in caplog.records if r.name == "ocrd.events"]
    assert len(failures) == 2
    assert all(r.exc_info and "listener bug" in str(r.exc_info[1]) for r in failures)
