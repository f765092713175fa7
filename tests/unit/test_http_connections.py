"""The guarded HTTP protocols (ocrd.http.connections) over a real socket, for both parsers.

The daemon runs httptools (llhttp, in C); h11 is kept as the other variant. Each check here runs
against both, so that they treat clients alike: the cap, the header deadline and, for heads and
trailers, the 16 KiB bound that h11 has of its own and the httptools variant adds (httptools
would gather an endless header line in memory until the deadline). The daemon-level tests
(tests/integration/test_daemon_connections.py, test_daemon_malformed.py, ...) run the daemon's
own choice, httptools.

Socket reads have a hang guard; nothing here asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from ocrd.config.settings import HttpSettings
from ocrd.http.connections import MAX_HEAD, ConnectionGuard, guarded_protocol

HANG_GUARD_S = 30
PARSERS = ["httptools", "h11"]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with the size of its body."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"size": size}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serving(parser: str, **settings: object) -> AsyncIterator[tuple[int, list[str]]]:
    """uvicorn with the guarded protocol on a free loopback port: (port, reasons dropped)."""
    dropped: list[str] = []
    http = HttpSettings(**settings)
    guard = ConnectionGuard(lambda: http, dropped.append)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical",
                                          lifespan="off", http=guarded_protocol(guard, parser)))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], dropped
    finally:
        server.should_exit = True
        await task


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    """``data`` in writes of ``size`` bytes, each drained: the server reads many small pieces."""
    for start in range(0, len(data), size):
        writer.write(data[start:start + size])
        await writer.drain()
        await asyncio.sleep(0)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), HANG_GUARD_S)


async def one_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD_S)
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), HANG_GUARD_S)
    return int(status_line.split()[1]), body


def test_the_daemon_runs_the_httptools_variant():
    guard = ConnectionGuard(HttpSettings)
    assert guarded_protocol(guard).__name__ == "GuardedHttpTools"
    assert guarded_protocol(guard, "h11").__name__ == "GuardedH11"


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_request_is_served_on_a_kept_alive_connection(parser):
    async with serving(parser) as (port, dropped):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in (b"{}", b'{"a": 1}'):
                writer.write(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                assert await one_response(reader) == (200, b'{"size": %d}' % len(body))
        finally:
            writer.close()
    assert dropped == []


# --- the bound on heads and trailers, read by read ------------------------------------------
# Fed straight to the protocol, one piece per read, so that the reads are exactly the pieces (over
# a socket the server's reads are whatever the kernel gathered) and the client can stop at the
# answer (a server that closes on unread data resets the connection, which can drop the 400).


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection(parser: str) -> tuple[asyncio.Protocol, FakeTransport]:
    """A guarded protocol of ``parser`` on a fake transport, as uvicorn makes one per connection."""
    config = uvicorn.Config(app, log_level="critical", lifespan="off")
    config.load()
    guard = ConnectionGuard(HttpSettings)
    protocol = guarded_protocol(guard, parser)(config=config, server_state=ServerState(),  # type: ignore[call-arg]
                                               app_state={}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def feed(protocol: asyncio.Protocol, transport: FakeTransport, data: bytes, piece: int) -> int:
    """``data`` a read of ``piece`` bytes at a time, stopping once the connection is closed;
    the bytes fed."""
    fed = 0
    for start in range(0, len(data), piece):
        if transport.closed:
            break
        protocol.data_received(data[start:start + piece])
        fed += len(data[start:start + piece])
        await asyncio.sleep(0)  # the app's task runs
    return fed


async def answered(transport: FakeTransport) -> bytes:
    """What was written once the app is done (or the connection closed)."""
    for _ in range(1000):
        if transport.closed or transport.written.endswith(b"}"):
            break
        await asyncio.sleep(0.001)
    return bytes(transport.written)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("piece", [1000, 97, 16 * 1024])
async def test_a_head_just_under_the_bound_is_served_even_in_small_pieces(parser, piece):
    # Request line and headers together a little under 16 KiB, in many reads: nothing in the
    # counting may take a read for more head than it was.
    headers = b"".join(b"x-filler-%03d: %s\r\n" % (n, b"v" * 100) for n in range(130))
    head = b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n" + headers + b"\r\n"
    assert MAX_HEAD - 2000 < len(head) < MAX_HEAD
    protocol, transport = connection(parser)
    await feed(protocol, transport, head + b"{}", piece)
    answer = await answered(transport)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"size": 2}'), answer[:300]
    assert not transport.closed


ENDLESS_HEADS = {
    "one header line that never ends": b"GET / HTTP/1.1\r\nHost: x\r\nx-endless: " + b"a" * 300_000,
    "headers and never the blank line": b"GET / HTTP/1.1\r\n" + b"x-h: v\r\n" * 40_000,
    "a request line that never ends": b"GET /" + b"a" * 300_000,
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("piece", [4096, 100, 64 * 1024])
@pytest.mark.parametrize("head", list(ENDLESS_HEADS))
async def test_a_head_that_goes_past_16_kib_unfinished_is_refused_with_400(parser, piece, head):
    protocol, transport = connection(parser)
    fed = await feed(protocol, transport, ENDLESS_HEADS[head], piece)
    assert transport.closed, "the endless head was read on"
    assert bytes(transport.written).startswith(b"HTTP/1.1 400 "), transport.written[:200]
    assert bytes(transport.written).endswith(b"Invalid HTTP request received.")
    # Refused within a read or two past the bound: the head's memory stays bounded.
    assert fed <= MAX_HEAD + 2 * piece


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("piece", [4096, 100])
async def test_endless_trailers_after_a_chunked_body_are_refused_with_400(parser, piece):
    request = (b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n"
               b"2\r\n{}\r\n0\r\nx-trailer: " + b"t" * 80_000)
    protocol, transport = connection(parser)
    fed = await feed(protocol, transport, request, piece)
    assert transport.closed
    assert bytes(transport.written).startswith(b"HTTP/1.1 400 "), transport.written[:200]
    assert fed <= 2 * MAX_HEAD + 2 * piece


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_large_body_in_small_chunks_is_read_whole(parser):
    # Chunk framing counts against the bound on what follows a head only beyond the body's own
    # size: 64 KiB in 64-byte chunks is some 6 KiB of framing and is served.
    chunks = b"".join(b"40\r\n" + b"x" * 64 + b"\r\n" for _ in range(1024))
    request = (b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
               + b"0\r\n\r\n")
    protocol, transport = connection(parser)
    await feed(protocol, transport, request, 1500)
    answer = await answered(transport)
    assert answer.endswith(b'{"size": 65536}'), answer[:300]


async def test_a_pipelined_head_past_the_bound_never_answers_before_the_earlier_request():
    # httptools reads a pipelined request while the one before is still being answered (h11
    # waits): refusing it then with a 400 would put that 400 where the client expects the first
    # answer, so the connection is closed instead.
    gate = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol, transport = connection("httptools")
    protocol.app = slow  # type: ignore[attr-defined]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0)
    await feed(protocol, transport, b"GET / HTTP/1.1\r\nx: " + b"a" * 300_000, 4096)
    assert transport.closed and bytes(transport.written) == b""
    gate.set()


@pytest.mark.parametrize("parser", PARSERS)
async def test_garbage_after_a_request_is_answered_400_after_the_requests_own_answer(parser):
    # llhttp reads the garbage in the same read as the request, before the app has answered it;
    # the 400 waits for that answer, as with h11, instead of going first and losing it.
    protocol, transport = connection(parser)
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\n\r\n{}"
                           b"\x00\x01 not a request\r\n\r\n")
    for _ in range(1000):
        if transport.closed:
            break
        await asyncio.sleep(0.001)
    answer = bytes(transport.written)
    first, _, rest = answer.partition(b'{"size": 2}')
    assert first.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert rest.startswith(b"HTTP/1.1 400 ") and b"Invalid HTTP request received." in rest  # h11: chunked
    assert transport.closed


async def test_refused_heads_are_logged_a_few_at_a_time(caplog):
    caplog.set_level(logging.WARNING, logger="ocrd.http")
    guard = ConnectionGuard(HttpSettings)
    config = uvicorn.Config(app, log_level="critical", lifespan="off")
    config.load()
    for _ in range(20):
        protocol = guarded_protocol(guard)(config=config, server_state=ServerState(),  # type: ignore[call-arg]
                                           app_state={}, _loop=asyncio.get_running_loop())
        transport = FakeTransport()
        protocol.connection_made(transport)
        await feed(protocol, transport, b"GET / HTTP/1.1\r\nx: " + b"a" * 2 * MAX_HEAD, 8192)
        assert transport.closed
    lines = [r for r in caplog.records if "headers (or trailers) are over" in r.getMessage()]
    assert 1 <= len(lines) < 20


# --- deadlines and the cap, over a socket -----------------------------------------------------


@pytest.mark.parametrize("parser", PARSERS)
async def test_headers_that_stall_get_408(parser):
    async with serving(parser, header_timeout=0.5) as (port, dropped):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHo")
            answer = await until_closed(reader)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"http.header_timeout" in answer
    assert dropped == ["header_timeout"]


@pytest.mark.parametrize("parser", PARSERS)
async def test_a_body_that_stalls_gets_408(parser):
    async with serving(parser, body_timeout=0.5) as (port, dropped):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{")
            answer = await until_closed(reader)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"http.body_timeout" in answer
    assert dropped == ["body_timeout"]


@pytest.mark.parametrize("parser", PARSERS)
async def test_over_the_cap_a_connection_gets_503(parser):
    async with serving(parser, max_connections=1) as (port, dropped):
        _, first = await asyncio.open_connection("127.0.0.1", port)
        try:
            await asyncio.sleep(0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await until_closed(reader)
            finally:
                writer.close()
        finally:
            first.close()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert b"too_many_connections" in answer
    assert dropped == ["over_limit"]


async def test_when_refusals_are_at_their_bound_the_oldest_answered_one_makes_room(monkeypatch):
    """Clients that got their 503 and keep their connection open (a flood) must not turn the next
    client's 503 into a reset: the oldest of them is let go instead."""
    import ocrd.http.connections as connections

    monkeypatch.setattr(connections, "MOST_REFUSING", 3)
    async with serving("httptools", max_connections=1) as (port, dropped):
        _, first = await asyncio.open_connection("127.0.0.1", port)  # holds the one place
        flood = []
        try:
            for _ in range(3):  # refused, answered, and never closed by their clients
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _ = await one_response(reader)
                assert status == 503
                flood.append((reader, writer))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await until_closed(reader)  # a 503, not ConnectionResetError
            finally:
                writer.close()
            # The oldest flooder was let go: its connection ends.
            assert await until_closed(flood[0][0]) == b""
        finally:
            first.close()
            for _, writer in flood:
                writer.close()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert dropped.count("over_limit") == 4
