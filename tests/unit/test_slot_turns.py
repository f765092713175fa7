"""Turns: how many requests run at once on one runner, first come first served, with a limit a
reload can change. Driven on the event loop without sleeps."""

from __future__ import annotations

import asyncio

import pytest

from ocrd.core.slots import Turns


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def waiting(turns: Turns, order: list[str], tag: str, *, low: bool = False) -> asyncio.Task[None]:
    async def take() -> None:
        await turns.acquire(low=low)
        order.append(tag)
    return asyncio.create_task(take())


async def test_up_to_the_limit_take_a_turn_at_once_and_the_rest_follow_in_arrival_order():
    turns, order = Turns(2), []
    tasks = [waiting(turns, order, tag) for tag in "abcd"]
    await settle()
    assert order == ["a", "b"] and turns.active == 2
    turns.release()
    await settle()
    assert order == ["a", "b", "c"]
    turns.release()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"] and turns.active == 2


async def test_a_newcomer_does_not_overtake_those_already_waiting():
    turns, order = Turns(1), []
    first = waiting(turns, order, "first")
    second = waiting(turns, order, "second")
    await settle()
    turns.release()  # "first" is handed the turn; the newcomer below must queue behind "second"
    third = waiting(turns, order, "third")
    await settle()
    assert order == ["first", "second"]
    turns.release()
    await asyncio.gather(first, second, third)
    assert order == ["first", "second", "third"]


async def test_a_waiter_cancelled_after_being_handed_the_turn_passes_it_on():
    turns, order = Turns(1), []
    await turns.acquire()
    doomed = waiting(turns, order, "doomed")
    after = waiting(turns, order, "after")
    await settle()
    turns.release()  # hands the turn to "doomed", which is cancelled before it runs
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await after
    assert order == ["after"] and turns.active == 1


async def test_a_cancelled_waiter_leaves_the_line_without_taking_a_turn():
    turns, order = Turns(1), []
    await turns.acquire()
    doomed = waiting(turns, order, "doomed")
    await settle()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    turns.release()
    assert turns.active == 0
    await turns.acquire()
    assert turns.active == 1


async def test_raising_the_limit_admits_waiters_at_once_and_lowering_it_waits_for_holders():
    turns, order = Turns(1), []
    tasks = [waiting(turns, order, tag) for tag in "abc"]
    await settle()
    assert order == ["a"]
    turns.set_limit(3)
    await settle()
    assert order == ["a", "b", "c"]
    turns.set_limit(1)
    late = waiting(turns, order, "late")
    turns.release()
    turns.release()
    await settle()
    assert "late" not in order and turns.active == 1
    turns.release()
    await asyncio.gather(*tasks, late)
    assert order[-1] == "late"


async def test_a_waiter_cancelled_while_a_turn_frees_up_is_skipped_and_the_next_one_served():
    turns, order = Turns(1), []
    await turns.acquire()
    doomed = waiting(turns, order, "doomed")
    after = waiting(turns, order, "after")
    await settle()
    doomed.cancel()  # its future is cancelled now; its task has not run its handler yet
    turns.release()  # _admit skips the cancelled future and hands the turn to "after"
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await after
    assert order == ["after"] and turns.active == 1


async def test_batch_lines_wait_for_every_live_request_and_take_free_turns_in_their_order():
    turns, order = Turns(1), []
    holder = waiting(turns, order, "live-0")
    await settle()
    batch = [waiting(turns, order, f"batch-{n}", low=True) for n in range(3)]
    await settle()
    live = [waiting(turns, order, f"live-{n}") for n in (1, 2)]  # came after the batch lines
    await settle()
    for _ in range(5):
        turns.release()
        await settle()
    await asyncio.gather(holder, *batch, *live)
    assert order == ["live-0", "live-1", "live-2", "batch-0", "batch-1", "batch-2"]


async def test_a_live_request_waits_for_at_most_the_batch_lines_already_running():
    turns, order = Turns(2), []
    batch = [waiting(turns, order, f"batch-{n}", low=True) for n in range(4)]
    await settle()
    assert order == ["batch-0", "batch-1"]  # free turns: batch lines take them
    live = waiting(turns, order, "live")
    await settle()
    turns.release()  # one running line ends: the live request is next, not batch-2
    await settle()
    assert order == ["batch-0", "batch-1", "live"]
    for _ in range(3):
        turns.release()
        await settle()
    await asyncio.gather(live, *batch)
    assert order[3:] == ["batch-2", "batch-3"]


async def test_a_cancelled_batch_waiter_passes_nothing_on_and_leaves_the_queue():
    turns, order = Turns(1), []
    holder = waiting(turns, order, "live")
    await settle()
    gone = waiting(turns, order, "batch-gone", low=True)
    kept = waiting(turns, order, "batch-kept", low=True)
    await settle()
    gone.cancel()
    await settle()
    turns.release()
    await asyncio.gather(holder, kept)
    assert order == ["live", "batch-kept"] and turns.active == 1


async def test_after_a_live_request_batch_lines_wait_a_grace_as_long_as_it_took():
    turns, order = Turns(1), []
    await turns.acquire()
    batch = waiting(turns, order, "batch", low=True)
    turns.release(live_seconds=0.3)  # a live request of 0.3 s ended: the runner is free
    await settle()
    assert order == [] and turns.active == 0  # held back for the next live request
    live = waiting(turns, order, "live")  # which, coming within the grace, finds it free
    await settle()
    assert order == ["live"]
    turns.release(live_seconds=0.3)  # a new grace starts
    await asyncio.sleep(0.1)
    assert order == ["live"]
    await asyncio.wait_for(batch, 5)  # nobody came: the batch line goes once the grace is over
    await live
    assert order == ["live", "batch"] and turns.active == 1


async def test_a_batch_line_asking_within_a_grace_waits_for_its_end():
    turns, order = Turns(1), []
    await turns.acquire()
    turns.release(live_seconds=0.2)
    batch = waiting(turns, order, "batch", low=True)
    await settle()
    assert order == []
    await asyncio.wait_for(batch, 5)
    assert order == ["batch"]


async def test_no_grace_after_batch_lines_nor_on_runners_that_serve_several_at_once():
    turns, order = Turns(1), []
    await turns.acquire(low=True)
    turns.release()  # a batch line ended: the next goes at once
    await asyncio.wait_for(waiting(turns, order, "batch-1", low=True), 0.05)
    wide, wide_order = Turns(4), []
    await wide.acquire()
    wide.release(live_seconds=5.0)  # vLLM batches: live and batch requests run side by side
    await asyncio.wait_for(waiting(wide, wide_order, "batch", low=True), 0.05)
    assert (order, wide_order) == (["batch-1"], ["batch"])
