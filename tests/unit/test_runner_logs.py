"""ocrd.runners.logs: a runner's last log lines in bounded memory, and followers that never slow the
runner down; ``runner_lines``, what the Logs RPC sends for a runner."""

from __future__ import annotations

import asyncio

from ocrd.catalog import CatalogEntry
from ocrd.runners.base import RunnerSpec
from ocrd.runners.logs import MAX_LINE_CHARS, LogBuffer, runner_lines, skipped_line
from tests.support.fake_runner import FakeRunner, StartPlan

HANG_GUARD = 10.0


async def take(lines, count: int) -> list[str]:
    return [await asyncio.wait_for(lines.__anext__(), HANG_GUARD) for _ in range(count)]


async def rest(lines) -> list[str]:
    return await asyncio.wait_for(_collect(lines), HANG_GUARD)


async def _collect(lines) -> list[str]:
    return [line async for line in lines]


def test_keeps_only_the_last_lines_up_to_its_capacity():
    buffer = LogBuffer(capacity=3)
    for number in range(10):
        buffer.append(f"line {number}")
    assert buffer.tail(100) == ["line 7", "line 8", "line 9"]
    assert buffer.tail(2) == ["line 8", "line 9"]
    assert buffer.tail(0) == []


def test_a_huge_line_is_cut():
    buffer = LogBuffer()
    buffer.append("x" * (MAX_LINE_CHARS * 10))
    (kept,) = buffer.tail(1)
    assert kept == "x" * MAX_LINE_CHARS + " [...]"


async def test_a_follower_gets_the_tail_then_new_lines_until_the_buffer_closes():
    buffer = LogBuffer()
    for line in ("one", "two", "three"):
        buffer.append(line)
    lines = buffer.follow(2)
    assert await take(lines, 2) == ["two", "three"]

    waiting = asyncio.ensure_future(lines.__anext__())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing new yet: it waits
    buffer.append("four")
    assert await asyncio.wait_for(waiting, HANG_GUARD) == "four"

    buffer.append("five")
    buffer.close()
    assert await rest(lines) == ["five"]  # what it had, then the end
    assert buffer.tail(10) == ["one", "two", "three", "four", "five"]  # lines stay after close


async def test_following_a_closed_buffer_gives_its_tail_and_ends():
    buffer = LogBuffer()
    buffer.append("last words")
    buffer.close()
    assert await rest(buffer.follow(5)) == ["last words"]


async def test_tail_zero_follows_only_new_lines():
    buffer = LogBuffer()
    buffer.append("old")
    lines = buffer.follow(0)
    waiting = asyncio.ensure_future(lines.__anext__())
    await asyncio.sleep(0)
    buffer.append("new")
    assert await asyncio.wait_for(waiting, HANG_GUARD) == "new"
    await lines.aclose()


async def test_a_slow_follower_loses_the_oldest_lines_and_is_told_how_many():
    buffer = LogBuffer(capacity=10, backlog=3)
    lines = buffer.follow(0)
    waiting = asyncio.ensure_future(lines.__anext__())
    await asyncio.sleep(0)  # subscribed, and now it does not read while the runner writes
    for number in range(8):
        buffer.append(f"line {number}")  # returns at once: nobody waits for the follower
    buffer.close()
    # It holds the last three; the five before them are gone, and it says so first.
    assert await asyncio.wait_for(waiting, HANG_GUARD) == skipped_line(5)
    assert await rest(lines) == ["line 5", "line 6", "line 7"]
    assert buffer.tail(10) == [f"line {n}" for n in range(8)]  # the buffer itself lost nothing


async def test_two_followers_each_get_every_line():
    buffer = LogBuffer()
    first, second = buffer.follow(0), buffer.follow(0)
    pending = [asyncio.ensure_future(first.__anext__()), asyncio.ensure_future(second.__anext__())]
    await asyncio.sleep(0)
    buffer.append("a")
    buffer.append("b")
    buffer.close()
    assert [await asyncio.wait_for(p, HANG_GUARD) for p in pending] == ["a", "a"]
    assert await rest(first) == ["b"]
    assert await rest(second) == ["b"]


# --- runner_lines: what the Logs RPC sends ------------------------------------------------------------


def runner_with_log(*lines: str) -> FakeRunner:
    spec = RunnerSpec(model=CatalogEntry(id="org/model", engines=("builtin",)), engine="builtin")
    runner = FakeRunner(spec=spec, plan=StartPlan(), fake_pid=1)
    runner.log_buffer = LogBuffer()
    for line in lines:
        runner.log_buffer.append(line)
    return runner


async def test_runner_lines_without_follow_are_the_tail_and_end():
    runner = runner_with_log("a", "b", "c")
    assert await rest(runner_lines(runner, 2, follow=False)) == ["b", "c"]
    assert await rest(runner_lines(runner, 0, follow=False)) == []


async def test_runner_lines_with_follow_end_when_the_runner_log_ends():
    runner = runner_with_log("a", "b")
    lines = runner_lines(runner, 1, follow=True)
    assert await take(lines, 1) == ["b"]
    runner.log_buffer.append("c")
    runner.log_buffer.close()  # what a process runner does when its stderr ends
    assert await rest(lines) == ["c"]


async def test_a_runner_without_a_log_shows_nothing():
    spec = RunnerSpec(model=CatalogEntry(id="org/model", engines=("builtin",)), engine="builtin")
    runner = FakeRunner(spec=spec, plan=StartPlan(), fake_pid=1)
    assert await rest(runner_lines(runner, 100, follow=False)) == []
    assert await rest(runner_lines(runner, 100, follow=True)) == []
