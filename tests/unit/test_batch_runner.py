"""The batch runner over a real jobs store (SQLite in a temporary state_dir) with a clock of the
test's own: a batch whose 24 hours end mid-run keeps the lines done; and a finish that a crash
interrupted after storing the result files leaves no second copy; an ended batch and its files
go 30 days after it ended.

Lines are answered by ``echo_line`` (the line's body back, status 200): what is under test is
the runner's bookkeeping, not a model.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ocrd.errors import ObjectNotFound
from ocrd.jobs.batch_input import read_input
from ocrd.jobs.batch_runner import BatchRunner
from ocrd.jobs.batches import WINDOW_SECONDS, BatchService
from ocrd.jobs.files import MADE_PURPOSE, FileService
from ocrd.jobs.store import JobStore

START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def jsonl(count: int, prefix: str) -> bytes:
    return b"".join(json.dumps({"custom_id": f"{prefix}{n}", "method": "POST", "url": "/v1/ocr",
                                "body": {"model": "ppocr", "n": n}}).encode() + b"\n" for n in range(count))


@pytest.fixture
async def jobs(tmp_path) -> AsyncIterator[tuple[FileService, BatchService, Clock]]:
    store = JobStore(tmp_path / "state")
    store.open()
    clock = Clock()
    files = FileService(store, clock=clock)
    yield files, BatchService(store, files, clock=clock), clock
    store.close()


async def submit(files: FileService, batches: BatchService, count: int, prefix: str) -> str:
    source = await files.create(io.BytesIO(jsonl(count, prefix)), filename="in.jsonl", purpose="batch",
                                max_bytes=2**20)
    batch = await batches.create(input_file_id=source.id, endpoint="/v1/ocr", completion_window="24h")
    return batch.id


async def echo_line(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
    return 200, body


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_a_batch_whose_day_ends_mid_run_keeps_what_was_done(jobs):
    files, batches, clock = jobs
    gate = asyncio.Semaphore(0)  # one release lets one line through

    async def gated_line(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        await gate.acquire()
        return 200, body

    batch_id = await submit(files, batches, 10, "e")
    runner = BatchRunner(batches, files, gated_line, concurrency=lambda: 1, clock=clock)
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: _status(batches, batch_id, "in_progress"))
        clock.now = START + WINDOW_SECONDS  # its 24 hours end while its first group runs
        for _ in range(4):  # that group (4 x concurrency): it finishes and is kept
            gate.release()
        await wait_for(lambda: _status(batches, batch_id, "expired"))
    finally:
        task.cancel()

    batch = (await batches.get(batch_id)).to_openai()
    assert batch["expired_at"] == int(clock.now) and batch["request_counts"]["completed"] == 4
    done = (await files.read_by_id(batch["output_file_id"])).splitlines()
    left = [json.loads(line) for line in (await files.read_by_id(batch["error_file_id"])).splitlines()]
    assert [json.loads(line)["custom_id"] for line in done] == ["e0", "e1", "e2", "e3"]
    assert [(line["custom_id"], line["error"]["code"]) for line in left] == [
        (f"e{n}", "batch_expired") for n in range(4, 10)]


async def test_a_finish_interrupted_after_storing_its_files_stores_them_once(jobs):
    files, batches, clock = jobs

    batch_id = await submit(files, batches, 3, "c")
    batch = await batches.get(batch_id)
    lines, errors = read_input(jsonl(3, "c"), "/v1/ocr")
    assert not errors and await batches.start(batch_id, lines)
    for line in lines:
        assert await batches.record(batch_id, line.number, line.model, 200, b'{"done": 1}\n')
    assert await batches.set_status(batch_id, "finalizing", only_from=("in_progress",))
    # What the crash left: the output file stored, the batch not told of it.
    left = await files.store_file(io.BytesIO(b'{"done": 1}\n'), filename=f"{batch.id}_output.jsonl",
                                  purpose=MADE_PURPOSE)

    await run_until(BatchRunner(batches, files, echo_line, concurrency=lambda: 1, clock=clock),
                    batches, batch_id, "completed")

    made, _ = await files.list(purpose=None)
    outputs = [f for f in made if f.purpose == MADE_PURPOSE]
    finished = await batches.get(batch_id)
    assert [f.id for f in outputs] == [finished.row["output_file_id"]] and left.id != outputs[0].id
    assert (await files.read_by_id(outputs[0].id)).count(b"\n") == 3
    assert not (files.folder / left.id).exists()


async def run_until(runner: BatchRunner, batches: BatchService, batch_id: str, status: str) -> None:
    """Runs ``runner`` until batch ``batch_id`` has ``status``."""
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: _status(batches, batch_id, status))
    finally:
        task.cancel()


async def _status(batches: BatchService, batch_id: str, status: str) -> bool:
    return (await batches.get(batch_id)).status == status


async def test_an_ended_batch_and_its_files_go_30_days_after_it_ended(jobs):
    files, batches, clock = jobs

    batch_id = await submit(files, batches, 2, "d")
    await run_until(BatchRunner(batches, files, echo_line, concurrency=lambda: 1, clock=clock),
                    batches, batch_id, "completed")
    output_id = (await batches.get(batch_id)).row["output_file_id"]
    assert (await files.get(output_id)).expires_at == int(clock.now) + 30 * 24 * 3600

    clock.now += 30 * 24 * 3600 - 1
    assert (await files.remove_expired(), await batches.remove_ended()) == (0, 0)
    clock.now += 1
    # The input (a batch file: 30 days from its upload) and the output; then the batch itself.
    assert (await files.remove_expired(), await batches.remove_ended()) == (2, 1)
    with pytest.raises(ObjectNotFound):
        await batches.get(batch_id)
    assert list(files.folder.iterdir()) == []
