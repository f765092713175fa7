"""FakeUpstream: an OpenAI server on a loopback port, standing in for a server ocrd does not run.

An ``[[upstreams]]`` entry points ocrd at any OpenAI-compatible server (a vLLM started by Compose,
a remote endpoint). What is under test is ocrd's side: its load check, its relay and how it
translates failures; so this is a real HTTP server in the test process, built on FakeVllm's
handler (``tests/support/fake_vllm/server.py``: the same ``/health``, ``/v1/models`` and chat
answers, streaming included) with switches for the ways a real server misbehaves:

* ``behaviour`` for the next chat requests: ``"normal"``; ``"error"`` (an OpenAI error, HTTP 400,
  with vLLM's integer ``code``); ``"html"`` (a proxy's HTML error page, HTTP 502); ``"truncated"``
  (200, half a JSON body); ``"no_choices"`` (200, JSON without ``choices``); ``"slow"`` (answers
  only once ``release`` is set); ``"gated"`` (streams its first event, then waits for
  ``release``); ``"endless"`` (streams events until the client goes away); ``"flood"`` (streams
  ``flood_bytes`` as fast as the connection takes them, counting what it wrote);
* ``api_key``: every route wants ``Authorization: Bearer <api_key>``, else 401;
* ``stop()``: the server goes away (connections are refused from then on).

It records what it observes: the chat request bodies (``requests``), ``disconnected`` (set when a
streamed write failed because the reader went away), ``written`` and ``flood_finished``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from tests.support.fake_vllm.server import FakeEngine, Handler, parse_args

# Hang guard for the handlers that wait on the test (slow, gated, endless).
WAIT_LIMIT = 60.0
FLOOD_EVENT_BYTES = 4096


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # ocrd hanging up on a slow or endless answer is what the timeout and disconnect tests
        # cause: not worth a traceback on the test run's stderr. Anything else still gets one.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeUpstream:
    def __init__(self, *served_names: str, api_key: str | None = None,
                 flood_bytes: int = 192 * 2**20):
        names = list(served_names) or ["org/fake-upstream"]
        args, unknown = parse_args([names[0], "--served-model-name", *names])
        self.engine = FakeEngine(args, unknown, [])
        self.api_key = api_key
        self.behaviour = "normal"
        self.flood_bytes = flood_bytes
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.disconnected = threading.Event()
        self.flood_finished = threading.Event()
        self.written = 0
        self._closing = threading.Event()
        self._connections: list[socket.socket] = []
        handler = type("FakeUpstreamHandler", (_Handler,), {"engine": self.engine, "fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-upstream")
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The OpenAI base URL, as an ``[[upstreams]]`` url."""
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        """Stops serving and closes the listening socket: new connections are refused."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.release.set()  # let waiting handlers end
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        # Kept-alive connections would go on being served by their handler threads.
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Handler(Handler):
    fake: FakeUpstream  # set on the subclass made in FakeUpstream

    def setup(self) -> None:
        super().setup()
        self.fake._connections.append(self.connection)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # FakeVllm prints uvicorn-style lines for container logs; tests need no output

    def _authorised(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self.send_error_json(401, "Incorrect API key provided", "authentication_error")
        return False

    def do_GET(self) -> None:
        if self._authorised():
            super().do_GET()

    def do_POST(self) -> None:
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.fake.requests.append(body)
        behaviour = self.fake.behaviour
        if behaviour == "normal" or (behaviour == "slow" and self.fake.release.wait(WAIT_LIMIT)):
            self._answer(body)
        elif behaviour == "error":
            self.send_error_json(400, "max_tokens is too large for this model", "BadRequestError",
                                 "max_tokens")
        elif behaviour == "html":
            self._send_raw(502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")
        elif behaviour == "truncated":
            self._send_raw(200, "application/json", b'{"id": "chatcmpl-1", "choices": [{"ind')
        elif behaviour == "no_choices":
            self._send_raw(200, "application/json", b'{"id": "chatcmpl-1", "object": "chat.completion"}')
        elif behaviour in ("gated", "endless", "flood"):
            self._stream_until_gone(body, behaviour)

    def _answer(self, body: dict[str, Any]) -> None:
        """FakeVllm's answer, after the same model check (the rest of its do_POST)."""
        if body.get("model") not in self.engine.names:
            self.send_error_json(404, f"The model `{body.get('model')}` does not exist.",
                                 "NotFoundError", "model")
            return
        words, finish, prompt_tokens = self.engine.answer(body)
        if body.get("stream"):
            self.stream(body, words, finish, prompt_tokens)
            return
        self.send_json(200, {
            "id": "chatcmpl-fake-upstream", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words),
                                                  "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)},
        })

    def _send_raw(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream_until_gone(self, body: dict[str, Any], behaviour: str) -> None:
        fake = self.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if behaviour == "gated":
                self._event(body, "first")
                fake.release.wait(WAIT_LIMIT)
                self._event(body, " second")
            elif behaviour == "endless":
                deadline = time.monotonic() + WAIT_LIMIT
                while time.monotonic() < deadline and not fake._closing.is_set():
                    self._event(body, " more")
                    time.sleep(0.02)
            else:
                padding = "x" * FLOOD_EVENT_BYTES
                while fake.written < fake.flood_bytes and not fake._closing.is_set():
                    fake.written += self._event(body, padding)
                fake.flood_finished.set()
            self._event(body, "", finish="stop")
            self.write_chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # BrokenPipeError, ConnectionResetError: the reader went away
            fake.disconnected.set()
            self.close_connection = True

    def _event(self, body: dict[str, Any], text: str, finish: str | None = None) -> int:
        event = {"id": "chatcmpl-fake-upstream", "object": "chat.completion.chunk",
                 "created": int(time.time()), "model": body.get("model"),
                 "choices": [{"index": 0, "delta": {"content": text} if text else {},
                              "logprobs": None, "finish_reason": finish}]}
        line = f"data: {json.dumps(event)}\n\n"
        self.write_chunk(line)
        return len(line)
