"""Connections that never finish a request, against a real ``ocrd serve``.

Reproduces the hardening issue: 1,150 connections that each send ``GET /health HTTP/1.1\\r\\nHo``
and nothing more, with the daemon's open-file limit at 1,024, made new requests time out, made
``ocrctl status`` say "ocrd is not running" and wrote 716,310 tracebacks to stderr. Now the HTTP
side answers (200, or 503 over its connection cap), the control plane answers, the log stays a
few lines, and once ``http.header_timeout`` closes the idle connections everything is back.

The deadlines are short here (seconds) so that the tests wait little; each test waits on what it
checks (an answer, a closed socket) with a generous hang guard, never on a sleep of the same
length as the deadline.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.daemon import ocr_messages, running_daemon, wait_until
from tests.support.openapi import validate
from tests.support.render import render_text_image

HALF_REQUEST = b"GET /health HTTP/1.1\r\nHo"
HANG_GUARD = 60.0


def _connect(port: int, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (hang guard: the timeout)."""
    sock.settimeout(HANG_GUARD)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _response(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    payload = json.loads(body)
    validate("ErrorResponse", payload)
    return int(status_line.split()[1]), headers, payload


@contextlib.contextmanager
def _many_open_files() -> Iterator[None]:
    """This process opens ~1,200 sockets: raise its own soft limit for that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _ocr_until(done: threading.Event, daemon, statuses: list[int]) -> None:
    """OCR requests one after the other on one kept-alive connection until ``done``."""
    body = {"model": "ppocr", "messages": ocr_messages(render_text_image(["Still served"]))}
    with daemon.http(timeout=HANG_GUARD) as http:
        while not done.is_set():
            response = http.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
            assert "Still served" in response.json()["choices"][0]["message"]["content"]


def test_half_open_connections_past_the_open_file_limit_leave_the_daemon_answering():
    config = {"http": {"header_timeout": "3s"}}
    with _many_open_files(), running_daemon(config) as daemon:
        assert daemon.ocrctl("load", "ppocr").returncode == 0
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (1024, 1024))
        # A client connected before the attack goes on being served through the runner: the
        # descriptors kept in reserve are what its runner connections need.
        statuses: list[int] = []
        done = threading.Event()
        ocr = threading.Thread(target=_ocr_until, args=(done, daemon, statuses))
        ocr.start()
        wait_until(lambda: statuses, timeout=HANG_GUARD, message="a first OCR answer")
        attack: list[socket.socket] = []
        try:
            for _ in range(1150):
                with contextlib.suppress(OSError):  # a connection ocrd refused at once
                    attack.append(_connect(daemon.port, HALF_REQUEST))
            # During the attack: /health answers, 200 or (over the cap) 503 in OpenAI's shape.
            with daemon.http(timeout=HANG_GUARD) as http:
                response = http.get("/health")
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "too_many_connections"
                assert response.headers["retry-after"] == "1"
            # The control plane answers, and so does the runner of the client served before.
            status = daemon.ocrctl("status")
            assert status.returncode == 0, status.stderr
            during = len(statuses)
            wait_until(lambda: len(statuses) > during + 1, timeout=HANG_GUARD,
                       message="OCR answers during the attack")
            # The header deadline closes the attacker's connections (or the cap refused them:
            # answered, or reset when too many waited for that): each reads an end.
            for sock in attack:
                with contextlib.suppress(ConnectionResetError):
                    _read_until_closed(sock)
        finally:
            done.set()
            for sock in attack:
                sock.close()
            ocr.join(HANG_GUARD)
        assert set(statuses) == {200}, statuses
        with daemon.http(timeout=HANG_GUARD) as http:
            assert http.get("/health").status_code == 200
            metrics = http.get("/metrics").text
        assert 'ocrd_http_connections_dropped_total{reason="header_timeout"}' in metrics
        log = daemon.stderr()
    assert "Traceback" not in log
    # A few lines about the refusals and timeouts, not one per connection.
    assert len(log.splitlines()) < 60, log[-3000:]
    assert log.count("closed the connection of") <= 5
    assert log.count("Too many open files") <= 5


def test_over_max_connections_a_new_request_gets_503_until_one_closes():
    config = {"http": {"max_connections": 4, "header_timeout": "60s"}}
    with running_daemon(config) as daemon:
        idle = [_connect(daemon.port) for _ in range(4)]
        try:
            # The fifth gets its request answered 503 and the connection closed.
            refused = _connect(daemon.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, payload = _response(_read_until_closed(refused))
            assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
            assert payload["error"]["code"] == "too_many_connections"
            assert "http.max_connections" in payload["error"]["message"]
        finally:
            idle.pop().close()
        try:
            # One closed: room again (the daemon notices the close when it reads the end).
            def health() -> int:
                with httpx.Client(timeout=HANG_GUARD) as client:
                    return client.get(daemon.base_url + "/health").status_code

            wait_until(lambda: health() == 200, timeout=HANG_GUARD, message="/health 200")
        finally:
            for sock in idle:
                sock.close()


def test_headers_that_stall_get_408_and_a_connection_that_sends_nothing_is_closed():
    with running_daemon({"http": {"header_timeout": "1s"}}) as daemon:
        stalled = _connect(daemon.port, HALF_REQUEST)
        silent = _connect(daemon.port)
        status, headers, payload = _response(_read_until_closed(stalled))
        assert (status, headers["connection"]) == (408, "close")
        assert "http.header_timeout" in payload["error"]["message"]
        assert _read_until_closed(silent) == b""  # nothing to answer: closed without a word


def test_the_header_deadline_restarts_with_each_request_on_a_kept_alive_connection():
    with running_daemon({"http": {"header_timeout": "1s"}}) as daemon:
        sock = _connect(daemon.port)
        started = time.monotonic()
        answers = b""
        # Well past the deadline in all, but each request's headers arrive at once.
        while time.monotonic() - started < 2.5:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            while b'"models"' not in answers:
                answers += sock.recv(65536)
            assert answers.startswith(b"HTTP/1.1 200 "), answers[:200]
            answers = b""
            time.sleep(0.3)
        sock.sendall(HALF_REQUEST)  # then a request that stalls on the same connection
        assert _response(_read_until_closed(sock))[0] == 408


def test_a_body_that_stalls_gets_408_and_a_slow_steady_one_is_read():
    config = {"http": {"body_timeout": "2s", "body_min_rate": 1000}}
    with running_daemon(config) as daemon:
        body = json.dumps({"model": "not/loaded-anywhere", "messages": [{"role": "user",
                           "content": "x" * 6000}]}).encode()
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: "
                b"application/json\r\ncontent-length: %d\r\n\r\n" % len(body))
        stalled = _connect(daemon.port, head + body[:100])
        status, _, payload = _response(_read_until_closed(stalled))
        assert status == 408 and "http.body_timeout" in payload["error"]["message"]

        # 6 KB at about twice the minimum rate: longer than body_timeout in all, and read whole.
        steady = _connect(daemon.port, head)
        for offset in range(0, len(body), 200):
            steady.sendall(body[offset:offset + 200])
            time.sleep(0.1)
        status, _, payload = _response(_read_until_closed_or_answered(steady))
        assert status == 404, payload  # the body arrived: the model is what is wrong with it
        assert payload["error"]["param"] == "model"


def _read_until_closed_or_answered(sock: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (content-length known)."""
    sock.settimeout(HANG_GUARD)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("key", ["max_connections", "header_timeout", "body_timeout",
                                 "body_min_rate"])
def test_the_connection_settings_are_checked_when_the_config_loads(key, tmp_path):
    from ocrd.config.loading import load_settings
    from ocrd.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"http": {key: 0}})
    assert f"http.{key}" in caught.value.message
