"""ocrd.log_throttle: repeated events cost a few lines and a summary, not a line each."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ocrd.log_throttle import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_the_first_events_are_logged_and_the_rest_summed_up_once_the_interval_is_over(caplog):
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("test.throttle"), "refused requests",
                             burst=3, interval=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for number in range(1000):
            throttled("request %d refused", number)
        assert _messages(caplog) == ["request 0 refused", "request 1 refused", "request 2 refused"]
        assert throttled.suppressed == 997
        clock.now += 60.0
        throttled("request %d refused", 1000)
    assert _messages(caplog)[3:] == [
        "997 more refused requests in the last 60 s were not logged one by one",
        "request 1000 refused",
    ]
    assert throttled.suppressed == 0


def test_a_quiet_period_logs_every_event_again(caplog):
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("test.throttle"), "events", burst=1, interval=10.0,
                             clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for _ in range(3):
            throttled("event")
            clock.now += 11.0
    assert _messages(caplog) == ["event", "event", "event"]


async def test_on_an_event_loop_the_summary_comes_when_the_interval_ends_without_a_new_event(caplog):
    throttled = ThrottledLog(logging.getLogger("test.throttle"), "accept errors", burst=1,
                             interval=0.05)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for _ in range(5):
            throttled("accept failed")
        assert _messages(caplog) == ["accept failed"]
        while throttled.suppressed:
            await asyncio.sleep(0.01)
    assert _messages(caplog) == [
        "accept failed", "4 more accept errors in the last 0.05 s were not logged one by one"]


def test_flush_all_writes_every_pending_summary(caplog):
    clock = Clock()
    first = ThrottledLog(logging.getLogger("test.throttle"), "refusals", burst=1, clock=clock)
    second = ThrottledLog(logging.getLogger("test.throttle"), "timeouts", burst=1, clock=clock)
    with caplog.at_level(logging.WARNING, "test.throttle"):
        for _ in range(3):
            first("refused")
            second("timed out")
        ThrottledLog.flush_all()
    assert sorted(_messages(caplog)[2:]) == [  # the order of the instances is not kept
        "2 more refusals in the last 60 s were not logged one by one",
        "2 more timeouts in the last 60 s were not logged one by one",
    ]
