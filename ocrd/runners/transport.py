"""``AiohttpTransport``: httpx's client API over aiohttp's connection pool, for the request path.

Every request ocrd serves becomes a request to a runner (or an upstream) through an
``httpx.AsyncClient``. httpcore's pool, httpx's default transport, looks at every pooled
connection (a ``poll`` of its socket each) on each request it starts and ends: with 32 requests in
flight that was a third of the daemon's CPU per request. aiohttp's pool hands out a connection in
constant time and parses responses in C, so the runners' clients use it underneath while the
rest of ocrd keeps httpx's API (and tests keep ``httpx.MockTransport`` for fake runners).

Errors come back as httpx's exceptions, with the meaning the proxy gives them: a connection that
cannot be made is ``ConnectError`` (503: not reachable); one that breaks or ends mid-answer is
``ReadError``/``RemoteProtocolError`` (502: it may have crashed); only the clock gives
``ConnectTimeout``/``ReadTimeout`` (504).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

CHUNK_SIZE = 64 * 1024


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
        connection = response.connection
        return httpx.Response(
            status_code=response.status, headers=response.raw_headers,
            stream=_ResponseStream(request, response), request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
                        # The socket the answer comes on (its options are checked in tests).
                        "socket": connection.transport.get_extra_info("socket")
                        if connection is not None and connection.transport is not None else None})

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


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request, *, connecting: bool) -> Iterator[None]:
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
