"""ocrd.core.restarts: the backoff of restarts after crashes, on a clock the test moves."""

from __future__ import annotations

from ocrd.core.restarts import Restart, RestartBackoff

MODEL = "org/model"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_with_each_restart_in_a_row_until_they_are_spent():
    backoff = RestartBackoff(Clock())
    # Each restart's start fails (never ready), so the row goes on.
    assert [backoff.after_crash(MODEL, 3, 2.0) for _ in range(4)] == [
        Restart(2.0, 1), Restart(4.0, 2), Restart(8.0, 3), None]


def test_a_runner_that_stayed_up_longer_than_the_longest_wait_starts_a_new_row():
    clock = Clock()
    backoff = RestartBackoff(clock)
    backoff.ready(MODEL)
    assert backoff.after_crash(MODEL, 2, 1.0) == Restart(1.0, 1)
    backoff.ready(MODEL)
    clock.now += 4.0  # not longer than 1 s x 2^2: still the same row
    assert backoff.after_crash(MODEL, 2, 1.0) == Restart(2.0, 2)
    backoff.ready(MODEL)
    clock.now += 4.5  # longer: healthy, the count starts over
    assert backoff.after_crash(MODEL, 2, 1.0) == Restart(1.0, 1)


def test_a_person_asking_for_a_load_forgets_the_row_and_models_count_apart():
    backoff = RestartBackoff(Clock())
    assert backoff.after_crash(MODEL, 1, 2.0) == Restart(2.0, 1)
    assert backoff.after_crash(MODEL, 1, 2.0) is None
    assert backoff.after_crash("org/other", 1, 2.0) == Restart(2.0, 1)
    backoff.forget(MODEL)
    assert backoff.after_crash(MODEL, 1, 2.0) == Restart(2.0, 1)
