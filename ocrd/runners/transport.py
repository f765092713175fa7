"""How ocrd's requests reach runners: aiohttp's connection pool, under two APIs.

Every request ocrd serves becomes a request to a runner (or an upstream). ``RunnerClient`` is an
``httpx.AsyncClient`` (everything but the request path uses httpx's API, and tests give fake
runners ``httpx.MockTransport``) with one more method, ``exchange``: the proxy's POST of a chat
request, answered by a ``Reply``, which an ``httpx.Response`` is too.

``AiohttpClient`` is the one real runners use. Under httpx's API it sends through
``AiohttpTransport``: httpcore's pool, httpx's default transport, looks at every pooled connection
(a ``poll`` of its socket each) on each request it starts and ends; with 32 requests in flight
that was a third of the daemon's CPU per request, and aiohttp's pool hands out a connection in
constant time and parses responses in C. Its ``exchange`` speaks to aiohttp directly: httpx's
request, URL, header and response objects around aiohttp's cost ~0.27 ms of CPU per request
(measured against the same aiohttp call), which was a quarter of what a proxied request cost.

Errors come back as httpx's exceptions either way, with the meaning the proxy gives them: a
connection that cannot be made is ``ConnectError`` (503: not reachable); one that breaks or ends
mid-answer is ``ReadError``/``RemoteProtocolError`` (502: it may have crashed); only the clock
gives ``ConnectTimeout``/``ReadTimeout`` (504).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK_SIZE = 64 * 1024
JSON_HEADERS = {"content-type": "application/json"}


class Reply(Protocol):
    """A runner's answer to ``exchange``, as the proxy reads it (``httpx.Response`` is one)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def charset_encoding(self) -> str | None: ...

    @property
    def content(self) -> bytes:
        """The whole body: read already, unless the reply was opened as a stream."""

    async def aread(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class RunnerClient(httpx.AsyncClient):
    """An httpx client rooted at a runner, plus the proxy's request (``exchange``)."""

    async def exchange(self, path: str, body: bytes, *, stream: bool) -> Reply:
        """POSTs a JSON ``body``; the answer read whole, or, with ``stream``, open for reading
        (the caller closes it)."""
        request = self.build_request("POST", path, content=body, headers=JSON_HEADERS)
        return await self.send(request, stream=stream)


async def exchange(client: httpx.AsyncClient, path: str, body: bytes, *, stream: bool) -> Reply:
    """``client.exchange`` where it has one (a runner's own client), else through httpx."""
    if isinstance(client, RunnerClient):
        return await client.exchange(path, body, stream=stream)
    return await RunnerClient.exchange(client, path, body, stream=stream)  # type: ignore[arg-type]


class AiohttpClient(RunnerClient):
    """A runner's client on aiohttp: its httpx API through ``AiohttpTransport``, its
    ``exchange`` without httpx (see the module's doc). ``headers`` go with every request (an
    upstream's key); ``uds``: a Unix socket (process runners), else TCP."""

    def __init__(self, *, base_url: str, timeout: httpx.Timeout, headers: Mapping[str, str] | None = None,
                 uds: str | None = None):
        self._aiohttp = AiohttpTransport(uds=uds)
        super().__init__(base_url=base_url, timeout=timeout, headers=headers, transport=self._aiohttp)
        self._root = base_url.rstrip("/")
        # identity: the bytes are relayed as they come, never decompressed (nor asked compressed)
        self._direct_headers = {**(headers or {}), **JSON_HEADERS, "accept-encoding": "identity"}

    async def exchange(self, path: str, body: bytes, *, stream: bool) -> Reply:
        with _as_httpx_errors(None, connecting=True):
            response = await self._aiohttp.post(self._root + path, body, self._direct_headers,
                                                connect=self.timeout.connect, read=self.timeout.read)
        reply = DirectReply(response)
        if not stream:
            try:
                await reply.aread()
            finally:
                await reply.aclose()
        return reply


class DirectReply:
    """An aiohttp response as a ``Reply``; its errors as httpx's."""

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self._content: bytes | None = None

    @property
    def status_code(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def charset_encoding(self) -> str | None:
        return self._response.charset

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the reply was opened as a stream and not read")
        return self._content

    @property
    def extensions(self) -> dict[str, Any]:
        """As an httpx response's: the socket the answer comes on (its options are tested)."""
        return {"socket": _socket_of(self._response)}

    async def aread(self) -> bytes:
        if self._content is None:
            with _as_httpx_errors(None, connecting=False):
                self._content = await self._response.read()
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(None, connecting=False):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # An answer not read to its end closes its connection: how a runner learns to stop.
        self._response.release()


def as_httpx_response(reply: Reply) -> httpx.Response:
    """``reply`` as an ``httpx.Response`` (itself if it is one), for httpx's text decoding."""
    if isinstance(reply, httpx.Response):
        return reply
    return httpx.Response(reply.status_code, headers=list(reply.headers.items()),
                          stream=_ReplyStream(reply))


class _ReplyStream(httpx.AsyncByteStream):
    def __init__(self, reply: Reply):
        self._reply = reply

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._reply.aiter_bytes():
            yield chunk

    async def aclose(self) -> None:
        await self._reply.aclose()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, in the running loop) per transport: a Unix socket
    (``uds``, process runners) or TCP (vLLM servers, upstreams)."""

    def __init__(self, *, uds: str | None = None, max_connections: int = 100):
        self._uds = uds
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # on first use: 0.1 s of the daemon's start-up otherwise
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=self._uds, limit=self._limit) if self._uds
                else aiohttp.TCPConnector(limit=self._limit, use_dns_cache=True))
            # No cookies, no proxies from the environment, no automatic decompression: the bytes
            # are relayed as the runner sent them.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, connect: float | None,
                   read: float | None) -> aiohttp.ClientResponse:
        """aiohttp's own POST (``AiohttpClient.exchange``); its errors are aiohttp's."""
        import aiohttp  # see _client

        return await self._client().post(
            url, data=body, headers=headers, allow_redirects=False, compress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        import aiohttp  # see _client

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        await request.aread()
        headers = [(name, value) for name, value in request.headers.multi_items()
                   if name.lower() != "transfer-encoding"]  # the body is whole: aiohttp frames it
        with _as_httpx_errors(request, connecting=True):
            response = await self._client().request(
                request.method, str(request.url), headers=headers, data=request.content or None,
                allow_redirects=False, compress=False, timeout=timeout)
        return httpx.Response(
            status_code=response.status, headers=response.raw_headers,
            stream=_ResponseStream(request, response), request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
                        # The socket the answer comes on (its options are checked in tests).
                        "socket": _socket_of(response)})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, request: httpx.Request, response: aiohttp.ClientResponse):
        self._request = request
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request, connecting=False):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _socket_of(response: aiohttp.ClientResponse) -> Any:
    connection = response.connection
    if connection is None or connection.transport is None:
        return None
    return connection.transport.get_extra_info("socket")


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request | None, *, connecting: bool) -> Iterator[None]:
    import aiohttp  # imported by the time a request runs (see _client)

    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        kind: Any = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        raise kind(str(exc) or "timed out", request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.ClientResponseError as exc:  # a malformed answer
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc) or type(exc).__name__, request=request) from exc
