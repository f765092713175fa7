"""The HTTP API's listening socket: connections it accepts have Nagle's algorithm off.

With Nagle on, a response written in two pieces (headers, then body) waits for the client's
delayed ACK: every request after the first on a kept-alive connection (the official openai client
keeps them) took ~48 ms. asyncio turns TCP_NODELAY on for an accepted connection only when the
listening socket is TCP by protocol number, which ``socket.create_server`` does not make it. So
the check here is on the socket option of a connection asyncio accepted, not on a timing.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from ocrd.http.connections import BACKLOG, listening_socket
from ocrd.runners.transport import exchange


async def _accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the connection an asyncio server accepts on ``listener``."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    host, port = listener.getsockname()[:2]
    try:
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(accepted, timeout=30)  # hang guard
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connections_the_http_socket_accepts_have_nagle_off(host):
    try:
        listener = listening_socket(host, 0)
    except OSError as exc:  # a host without IPv6
        pytest.skip(f"cannot listen on {host}: {exc}")
    assert listener.proto == socket.IPPROTO_TCP
    assert await _accepted_nodelay(listener) != 0


async def test_a_socket_made_by_create_server_would_leave_nagle_on():
    # The cause, kept in view: the option check above is what tells the two apart.
    listener = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    assert await _accepted_nodelay(listener) == 0


def test_a_port_in_use_is_refused_by_the_second_listener():
    first = listening_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


@pytest.mark.parametrize("way", ["httpx", "exchange"])
async def test_the_client_ocrd_proxies_vllm_servers_through_has_nagle_off_too(way):
    # Upstreams and vLLM servers are reached over TCP through aiohttp (ocrd.runners.transport),
    # which sets TCP_NODELAY on the sockets it connects; checked on the client vLLM runners use,
    # both through its httpx API and the proxy's ``exchange``, while the answer's body is held
    # back (so the connection is still the request's).
    from ocrd.runners.vllm.readiness import server_client

    release = asyncio.Event()
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"ok")
        await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server_client(f"http://127.0.0.1:{port}", 30.0) as client:
            if way == "httpx":
                async with client.stream("GET", "/health") as response:
                    sock = response.extensions["socket"]
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                    release.set()
                    assert await response.aread() == b"ok"
            else:
                reply = await exchange(client, "/v1/chat/completions", b"{}", stream=True)
                sock = reply.extensions["socket"]  # type: ignore[attr-defined]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                release.set()
                assert await reply.aread() == b"ok"
                await reply.aclose()
                # The bytes are relayed as they come: never asked for compressed.
                assert b"accept-encoding: identity" in heads[0].lower()
                assert b"content-type: application/json" in heads[0].lower()
    finally:
        release.set()
        server.close()
        await server.wait_closed()
