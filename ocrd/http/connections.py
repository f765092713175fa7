"""HTTP connections: how many may be open, and how long a request may take to arrive.

uvicorn bounds neither. A connection that sends half a request line and then nothing stays open
for good, holding a file descriptor; 1,150 of them against an open-file limit of 1,024 took the
whole daemon down: new requests timed out, ``ocrctl`` could not reach the control socket, and
asyncio logged every failed ``accept()`` with a traceback (318 MB in 40 s). So the protocol uvicorn
runs per connection is wrapped (``guarded_protocol``) to enforce, with ``http.*`` settings read at
each connection (a reload applies to the next one):

* **a cap**: at most ``max_connections`` open, and never more than the open-file limit allows
  after a reserve kept for the control socket, runners' sockets and files (``connection_cap``). A
  connection over the cap is answered ``503`` (OpenAI's error shape, ``Retry-After``) once its
  request arrives, or closed at once when too many are already waiting for that answer;
* **a deadline for headers**: complete within ``header_timeout`` of the connection opening, or of
  the next request's first byte on a kept-alive connection; else ``408`` and close;
* **a deadline for the body** (Apache's mod_reqtimeout): ``body_timeout``, extended by a second for
  every ``body_min_rate`` bytes that arrive, not counting time in which ocrd itself stopped reading;
  else ``408`` (unless an answer already started) and close.

Connections closed by these rules are logged a few at a time (``ThrottledLog``) and counted in
``ocrd_http_connections_dropped_total``. ``log_accept_errors`` does the same for asyncio's
"socket.accept() out of system resource".

The parser underneath is httptools (llhttp, in C) by default: uvicorn's pure-Python h11 parser
was the largest single cost of a proxied request after the image check. h11 bounds a request's
head (16 KiB, its "incomplete event" limit) and llhttp does not, so the httptools variant adds
that bound itself (``MAX_HEAD``), for trailers too. Both variants behave alike towards clients;
``guarded_protocol(guard, "h11")`` gives the h11 one.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import resource
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ocrd.config.settings import HttpSettings
from ocrd.log_throttle import ThrottledLog

log = logging.getLogger("ocrd.http")

# Kept free for everything but HTTP connections: the control socket and its clients, runners'
# sockets and pipes, model files, NVML, Docker. At least this, or an eighth of the limit.
FD_RESERVE = 128
# The listening socket's backlog, and so the most connections asyncio accepts in one go before
# any of them is looked at: they need descriptors too.
BACKLOG = 128
# Connections over the cap that may wait for their request to be answered 503; beyond, reset. A
# burst is accepted BACKLOG at a time and each is answered as soon as its request is read, so twice
# that is what a flood of connections needs without any being reset.
MOST_REFUSING = 2 * BACKLOG
REFUSAL_WAIT = 1.0  # seconds a refused connection may take to send its request
# The most bytes a request's head (request line and headers), or its trailers, may take: h11's
# limit (uvicorn keeps h11's default), which the httptools variant enforces itself.
MAX_HEAD = 16 * 1024


def listening_socket(host: str, port: int) -> socket.socket:
    """The HTTP API's listening socket, made TCP by protocol number: asyncio turns Nagle's
    algorithm off (TCP_NODELAY) on an accepted connection only when the socket's ``proto`` is
    IPPROTO_TCP, and ``socket.create_server`` makes it 0. With Nagle on, every response after the
    first on a kept-alive connection waits for the client's delayed ACK: ~40 ms a request."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def connection_cap(max_connections: int) -> int:
    """``max_connections``, or fewer where the open-file limit could not hold them."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    reserve = max(FD_RESERVE, soft // 8) + BACKLOG + MOST_REFUSING
    return max(1, min(max_connections, soft - reserve))


def raise_open_file_limit() -> int:
    """Raises the soft open-file limit to the hard one (systemd starts services at 1,024 soft
    unless LimitNOFILE says otherwise); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


class ConnectionGuard:
    """What all connections share: the settings, the count of refusals in progress, the logs."""

    def __init__(self, settings: Callable[[], HttpSettings],
                 dropped: Callable[[str], None] = lambda reason: None):
        self.settings = settings
        self._dropped = dropped  # a metrics counter, by reason
        self.refusing = 0
        # Refusals that have sent their 503 and only wait for the client to close, oldest first:
        # the ones to let go when a new connection needs the room (see ``refuse``).
        self.answered: collections.OrderedDict[_Refusal, None] = collections.OrderedDict()
        self._over_cap_log = ThrottledLog(log, "connections answered 503 for being over the cap")
        self._slow_log = ThrottledLog(log, "connections closed for sending a request too slowly",
                                      level=logging.INFO)
        self._big_head_log = ThrottledLog(log, "requests refused for a head over MAX_HEAD")

    def over_cap(self, open_connections: int) -> bool:
        return open_connections >= connection_cap(self.settings().max_connections)

    def refuse(self, transport: asyncio.Transport, open_connections: int) -> None:
        """Takes over a connection over the cap: a 503 once its request is in, then close."""
        self._dropped("over_limit")
        cap = connection_cap(self.settings().max_connections)
        self._over_cap_log(
            "HTTP connection limit reached (%d open, at most %d with http.max_connections = %d "
            "and an open-file limit of %d): answering 503", open_connections, cap,
            self.settings().max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        if self.refusing >= MOST_REFUSING and self.answered:
            # The oldest answered refusal has its 503 and read its request; what it waits for is
            # its client's close. Closing it now makes room, so that the newest connection (as
            # likely as not a real client arriving during a flood) gets its 503 rather than a reset.
            oldest, _ = self.answered.popitem(last=False)
            oldest.close()
        if self.refusing >= MOST_REFUSING:
            transport.set_protocol(asyncio.Protocol())  # uvicorn's never started: not its to end
            transport.abort()
            return
        refusal = _Refusal(self)
        transport.set_protocol(refusal)
        refusal.connection_made(transport)

    def too_slow(self, client: Any, phase: str, seconds: float) -> None:
        self._dropped(f"{phase}_timeout")
        where = f"{client[0]}:{client[1]}" if client else "a client"
        self._slow_log("closed the connection of %s: its request's %s did not arrive within %g s "
                       "(http.%s_timeout)", where, "headers" if phase == _HEADERS else phase,
                       seconds, phase)

    def head_too_large(self, client: Any) -> None:
        where = f"{client[0]}:{client[1]}" if client else "a client"
        self._big_head_log("refused the request of %s: its headers (or trailers) are over %d bytes",
                           where, MAX_HEAD)


def guarded_protocol(guard: ConnectionGuard, parser: Literal["httptools", "h11"] = "httptools"
                     ) -> type[asyncio.Protocol]:
    """uvicorn's protocol class (httptools or h11) with ``guard``'s cap and deadlines, for
    ``uvicorn.Config(http=...)``."""
    base = _GuardedHttpTools if parser == "httptools" else _GuardedH11
    return type(base.__name__.lstrip("_"), (base,), {"guard": guard})


_HEADERS, _BODY, _IDLE = "header", "body", "idle"  # the first two name http.*_timeout

# The mixin below runs on either of uvicorn's protocols; mypy checks it against the h11 one.
if TYPE_CHECKING:
    _UvicornProtocol = H11Protocol
else:
    _UvicornProtocol = object


class _Deadlines(_UvicornProtocol):
    """The cap at connection_made, then the header and body deadlines, over either of uvicorn's
    protocols. It only reads what they share (``cycle`` with ``more_body``, ``response_started``,
    ``response_complete``; ``flow.read_paused``; ``connections``)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        if self.guard.over_cap(len(self.connections)):
            self.guard.refuse(transport, len(self.connections))
            return
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._phase = _IDLE
        self._request: Any = None  # the cycle whose headers were seen last
        self._received = False  # any byte of the request awaited
        self._start(_HEADERS, self.guard.settings().header_timeout)

    def data_received(self, data: bytes) -> None:
        # The first bytes of the next request on a kept-alive connection start its header
        # deadline, unless they hold all its headers (most do): then no timer is needed.
        starting = self._phase == _IDLE and (self.cycle is None or self.cycle.response_complete)
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._request:  # headers complete
            self._request = cycle
            if cycle.more_body:
                self._start(_BODY, self.guard.settings().body_timeout)
            else:
                self._stop()
        elif starting:
            self._start(_HEADERS, self.guard.settings().header_timeout)
        elif self._phase == _BODY and cycle is not None:
            if cycle.more_body:
                self._deadline += len(data) / self.guard.settings().body_min_rate
            else:
                self._stop()
        self._received = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _start(self, phase: str, seconds: float) -> None:
        self._stop()
        self._phase, self._received = phase, False
        self._deadline = self.loop.time() + seconds
        self._timer = self.loop.call_at(self._deadline, self._on_deadline, seconds)

    def _stop(self) -> None:
        timer = getattr(self, "_timer", None)  # none yet when connection_made refused it
        if timer is not None:
            timer.cancel()
            self._timer = None
        self._phase = _IDLE

    def _on_deadline(self, seconds: float) -> None:
        self._timer = None
        now = self.loop.time()
        if self._phase == _BODY and self.flow.read_paused:
            self._deadline = max(self._deadline, now + 1.0)  # ocrd stopped reading, not them
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_deadline, seconds)
            return
        if self.transport.is_closing():
            return
        phase = self._phase
        self._phase = _IDLE
        self.guard.too_slow(self.client, phase, seconds)
        if phase == _BODY:
            answer = not self.cycle.response_started
        else:  # a connection that sent nothing of a request is closed without a word
            answer = self._received
        if answer:
            what = "headers" if phase == _HEADERS else phase
            self.transport.write(error_response(
                408, "Request Timeout", f"the request's {what} did not arrive in time "
                f"(http.{phase}_timeout)", "timeout"))
        self.transport.close()


class _GuardedH11(_Deadlines, H11Protocol):
    """h11 bounds the head itself: over 16 KiB unfinished, it answers 400 and closes."""

    guard: ConnectionGuard


class _GuardedHttpTools(_Deadlines, HttpToolsProtocol):  # type: ignore[misc]  # mypy sees _Deadlines as an H11Protocol
    """httptools under the deadlines, with the bound on heads that h11 has and llhttp has not:
    httptools gathers a header in memory until its line ends, so one endless header (or
    trailer) would grow until the deadline, at whatever rate the client sends. A head still
    unfinished past ``MAX_HEAD`` bytes is answered as h11 answers it (400, "Invalid HTTP request
    received.", close); so are trailers past ``MAX_HEAD`` (chunk framing counts with them, up to
    as many bytes as the body has: a client of 1-byte chunks is turned away too).

    Heads are counted from the parser's callbacks (the request line and every whole header) and,
    for a head that goes on over several reads, by the whole of each later read: every byte of a
    read that leaves the head unfinished is head. Only the unfinished header of the read in which
    the head began goes uncounted, which bounds it by the size of one read."""

    guard: ConnectionGuard
    _deferred_400: str | None = None  # a malformed request's answer, due after earlier ones
    _read_whole: Any = None  # the last cycle whose request was read to its end
    _in_message = False  # between the parser's message begin and message complete
    _in_head = False  # ... and before its headers complete
    _head = 0  # bytes of the head so far
    _body = 0  # body bytes of the message (after its headers)
    _extra = 0  # other bytes after its headers: chunk framing, trailers

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._head = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body = self._extra = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._read_whole = self.cycle
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request, but never ahead of the answers still due to
        the requests before it on the connection (llhttp parses all that a read brings, so a
        request followed by garbage meets the garbage before the request is answered; uvicorn
        would write the 400 first and close, and the request's own answer would be lost). h11
        parses a request only once the one before is answered: this is its order."""
        cycle = self.cycle
        if cycle is not None and cycle is self._read_whole and not cycle.response_complete:
            self._deferred_400 = msg
            self.flow.pause_reading()  # nothing after the garbage is of use
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        if self._deferred_400 is None or self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # next: a request read before the garbage, if any
            return
        self.server_state.total_requests += 1  # as uvicorn counts an answered request
        super().send_400_response(self._deferred_400)

    def data_received(self, data: bytes) -> None:
        head_before = self._head if self._in_head else None
        after_head = self._in_message and not self._in_head
        body_before = self._body
        super().data_received(data)
        if self.transport.is_closing() or self._deferred_400 is not None:
            return
        cycle = self.cycle
        if self._in_head:
            if head_before is not None:  # the whole read was head
                self._head = head_before + len(data)
            if self._head <= MAX_HEAD:
                return
            # The cycle is an earlier request's: its answer, if still due, must come first.
            answer = cycle is None or cycle.response_complete
        elif after_head and self._in_message:  # the whole read belongs to this message's rest
            self._extra += len(data) - (self._body - body_before)
            if self._extra <= MAX_HEAD + self._body:
                return
            answer = not cycle.response_started  # the cycle is this request's
        else:
            return
        self._stop()
        self.guard.head_too_large(self.client)  # a few lines, not one per attempt
        if answer:
            super().send_400_response("Invalid HTTP request received.")  # as h11's protocol answers
        else:
            self.transport.close()


class _Refusal(asyncio.Protocol):
    """A connection over the cap: answered 503 as soon as it sends anything (its request) or
    after ``REFUSAL_WAIT``, then half-closed, and closed once the client closes its side (or after
    ``REFUSAL_WAIT`` more). Answering once the request is in, and reading what else comes until
    the client is done, keeps it from meeting a reset (unread data at close) instead of the 503."""

    def __init__(self, guard: ConnectionGuard):
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False
        self._counted = False  # in guard.refusing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._guard.refusing += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_WAIT, self._answer)

    def data_received(self, data: bytes) -> None:
        if not self._answered:
            self._answer()  # later data is read and dropped

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._uncount()

    def close(self) -> None:
        """Let go at once (its answer is sent): the guard needs the room."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._uncount()  # now: connection_lost comes a loop turn later

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._guard.refusing -= 1
        self._guard.answered.pop(self, None)

    def _answer(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._answered:  # the client kept the connection open after the answer
            transport.close()
            return
        self._answered = True
        transport.write(_OVER_CAP)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._guard.answered[self] = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_WAIT, self._answer)


def error_response(status: int, reason: str, message: str, code: str,
                   headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 response with OpenAI's error body that closes the connection."""
    body = json.dumps({"error": {"message": message, "type": "server_error" if status >= 500
                                 else "invalid_request_error", "param": None, "code": code}})
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("ascii")


_OVER_CAP = error_response(
    503, "Service Unavailable", "ocrd has as many HTTP connections open as it allows; retry "
    "shortly (http.max_connections)", "too_many_connections", ("retry-after: 1",))


def log_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio logs "socket.accept() out of system resource" with a traceback for every failed
    accept() (up to the backlog's length per wake-up); log a few and count the rest instead."""
    accept_errors = ThrottledLog(log, "failed accept() calls")
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            accept_errors("cannot accept HTTP connections: %s (open-file limit %d); retrying",
                          context.get("exception"), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
