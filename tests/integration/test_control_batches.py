"""The Files and Batch RPCs of the control plane, in process: a real gRPC server over a real jobs
store (SQLite in a temporary state_dir), reached over TCP with bearer tokens of both roles.

Uploads in pieces and their limits, a file read back in pieces, batches created, listed,
cancelled and watched (the store moved on by the batch service's own calls, as the runner makes
them), and which role may call what.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ocrd.config.tokens import generate_token, hash_token
from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer, JobServices
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.jobs.batch_input import InputLine
from ocrd.jobs.batches import BatchService
from ocrd.jobs.files import FileService
from ocrd.jobs.store import JobStore
from tests.support.control import settings_for

ADMIN = generate_token()
READER = generate_token()
TOKENS = [{"name": "alice", "role": "admin", "hash": hash_token(ADMIN)},
          {"name": "grafana", "role": "read-only", "hash": hash_token(READER)}]
MAX_FILE = 3 * 1024 * 1024
LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/ocr", "body": {"model": "ppocr"}}\n'


def auth(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobServices]:
    store = JobStore(tmp_path / "state")
    store.open()
    files = FileService(store)
    batches = BatchService(store, files)
    files.in_use = batches.files_in_use
    yield JobServices(files, batches, lambda: MAX_FILE)
    store.close()


@pytest.fixture
async def stub(socket_dir, scheduler, daemon_info, jobs) -> AsyncIterator[control_pb2_grpc.ControlStub]:
    settings = settings_for(socket_dir, listen=["127.0.0.1:0"], tokens=TOKENS)
    server = await start_control_server(settings, ControlServicer(scheduler, daemon_info, jobs=jobs))
    try:
        async with grpc.aio.insecure_channel(server.addresses[1]) as channel:
            yield control_pb2_grpc.ControlStub(channel)
    finally:
        await server.stop(None)


async def upload(stub, data: bytes, *, purpose: str = "batch", piece: int = 1024 * 1024,
                 token: str = ADMIN, **header: object) -> pb.StoredFile:
    parts = [pb.UploadFileRequest(header=pb.UploadFileHeader(filename="in.jsonl", purpose=purpose, **header))]
    parts += [pb.UploadFileRequest(data=data[i:i + piece]) for i in range(0, len(data), piece)]
    return await stub.UploadFile(iter(parts), metadata=auth(token))


async def read(stub, file_id: str) -> tuple[list[pb.FileChunk], bytes]:
    chunks = [chunk async for chunk in stub.ReadFile(pb.ReadFileRequest(id=file_id), metadata=auth(ADMIN))]
    return chunks, b"".join(chunk.data for chunk in chunks)


async def test_a_file_uploaded_in_pieces_reads_back_whole(stub, jobs):
    data = bytes(range(256)) * 9000  # 2.2 MiB: three pieces each way
    stored = await upload(stub, data, purpose="ocr", piece=700_000, expires_after_seconds=7200)

    assert (stored.filename, stored.purpose, stored.bytes) == ("in.jsonl", "ocr", len(data))
    assert stored.expires_at.seconds - stored.created_at.seconds == 7200
    assert (await jobs.files.read_by_id(stored.id)) == data
    chunks, back = await read(stub, stored.id)
    assert back == data and len(chunks) == 3
    assert chunks[0].file.id == stored.id and not chunks[1].HasField("file")


async def test_uploads_are_refused_whole_and_leave_nothing(stub, jobs):
    cases = [
        ([pb.UploadFileRequest(data=b"x")], "an upload starts with its header"),
        ([], "the upload sent nothing"),
        ([pb.UploadFileRequest(header=pb.UploadFileHeader(filename="a", purpose="fine-tune"))],
         "purpose 'fine-tune' is not one ocrd stores files for"),
        ([pb.UploadFileRequest(header=pb.UploadFileHeader(filename="a", purpose="batch")),
          pb.UploadFileRequest(header=pb.UploadFileHeader(filename="b", purpose="batch"))],
         "an upload has one header"),
    ]
    for parts, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UploadFile(iter(parts), metadata=auth(ADMIN))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as too_large:
        await upload(stub, b"x" * (MAX_FILE + 1))
    assert too_large.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert too_large.value.details() == f"the file is larger than {MAX_FILE} bytes (limits.max_file_bytes)"
    with pytest.raises(grpc.aio.AioRpcError) as short_expiry:
        await upload(stub, LINE, expires_after_seconds=60)
    assert "expires_after.seconds must be between 3600" in short_expiry.value.details()

    files, _ = await jobs.files.list()
    assert files == []
    assert list(jobs.files.folder.iterdir()) == []  # no spool, no partial file


async def test_batches_are_created_listed_watched_and_cancelled(stub, jobs):
    source = await upload(stub, LINE)
    first = await stub.CreateBatch(pb.CreateBatchRequest(
        input_file_id=source.id, endpoint="/v1/ocr", metadata={"job": "x"}), metadata=auth(ADMIN))
    second = await stub.CreateBatch(pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/ocr"),
                                    metadata=auth(ADMIN))
    assert (first.status, first.metadata, first.ended) == ("validating", {"job": "x"}, False)
    assert first.expires_at.seconds - first.created_at.seconds == 24 * 3600

    page = await stub.ListBatches(pb.ListBatchesRequest(limit=1), metadata=auth(READER))
    assert [b.id for b in page.batches] == [second.id] and page.has_more
    rest = await stub.ListBatches(pb.ListBatchesRequest(after=second.id), metadata=auth(READER))
    assert [b.id for b in rest.batches] == [first.id] and not rest.has_more

    seen: list[pb.Batch] = []

    async def watch() -> None:
        async for batch in stub.WatchBatch(pb.GetBatchRequest(id=first.id), metadata=auth(READER)):
            seen.append(batch)

    async def seen_now(status: str, completed: int) -> None:
        """Each change waits for the watcher to report the one before (they are told at most
        every WATCH_PAUSE: two changes within it come as one)."""
        while not seen or (seen[-1].status, seen[-1].completed) != (status, completed):
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(seen_now("validating", 0), 10)
    assert await jobs.batches.start(first.id, [InputLine(1, "a", "builtin/ppocr", b"{}")])
    await asyncio.wait_for(seen_now("in_progress", 0), 10)
    assert await jobs.batches.record(first.id, 1, "builtin/ppocr", 200, b"{}\n")
    await asyncio.wait_for(seen_now("in_progress", 1), 10)
    cancelling = await stub.CancelBatch(pb.CancelBatchRequest(id=first.id), metadata=auth(ADMIN))
    assert cancelling.status == "cancelling"
    await asyncio.wait_for(seen_now("cancelling", 1), 10)
    await jobs.batches.finish(first.id, "cancelled", output_file_id=None, error_file_id=None)
    await asyncio.wait_for(watcher, 10)

    assert [(b.status, b.total, b.completed) for b in seen] == [
        ("validating", 0, 0), ("in_progress", 1, 0), ("in_progress", 1, 1), ("cancelling", 1, 1),
        ("cancelled", 1, 1)]
    assert seen[-1].ended and seen[-1].HasField("cancelled_at")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CancelBatch(pb.CancelBatchRequest(id=second.id + "x"), metadata=auth(ADMIN))
    assert again.value.code() is grpc.StatusCode.NOT_FOUND
    shown = await stub.GetBatch(pb.GetBatchRequest(id=first.id), metadata=auth(READER))
    assert shown == seen[-1]


async def test_a_bad_batch_request_says_what_is_wrong(stub):
    source = await upload(stub, LINE, purpose="ocr")
    cases = [
        (pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/embeddings"),
         grpc.StatusCode.INVALID_ARGUMENT, "endpoint must be one of /v1/chat/completions, /v1/ocr"),
        (pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/ocr"),
         grpc.StatusCode.INVALID_ARGUMENT, "was uploaded with purpose 'ocr'; a batch's input needs purpose batch"),
        (pb.CreateBatchRequest(input_file_id="file-nope", endpoint="/v1/ocr"),
         grpc.StatusCode.NOT_FOUND, "No such File object: file-nope"),
        (pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/ocr",
                               metadata={str(n): "v" for n in range(17)}),
         grpc.StatusCode.INVALID_ARGUMENT, "metadata must be an object of at most 16 string pairs"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateBatch(request, metadata=auth(ADMIN))
        assert (refused.value.code(), message in refused.value.details()) == (code, True), refused.value.details()


async def test_a_read_only_token_sees_batches_but_may_not_touch_files_or_start_work(stub):
    source = await upload(stub, LINE)
    batch = await stub.CreateBatch(pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/ocr"),
                                   metadata=auth(ADMIN))
    assert (await stub.GetBatch(pb.GetBatchRequest(id=batch.id), metadata=auth(READER))).id == batch.id

    refused_calls = {
        "UploadFile": lambda: upload(stub, LINE, token=READER),
        "ReadFile": lambda: _drain(stub.ReadFile(pb.ReadFileRequest(id=source.id), metadata=auth(READER))),
        "CreateBatch": lambda: stub.CreateBatch(
            pb.CreateBatchRequest(input_file_id=source.id, endpoint="/v1/ocr"), metadata=auth(READER)),
        "CancelBatch": lambda: stub.CancelBatch(pb.CancelBatchRequest(id=batch.id), metadata=auth(READER)),
    }
    for method, call in refused_calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, method
        assert refused.value.details() == (f"token 'grafana' is read-only and may not call {method}: "
                                           "it needs an admin token or certificate")
    still = await stub.GetBatch(pb.GetBatchRequest(id=batch.id), metadata=auth(READER))
    assert still.status == "validating"


async def _drain(stream) -> None:
    with contextlib.suppress(StopAsyncIteration):
        async for _ in stream:
            pass
