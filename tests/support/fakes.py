"""Stand-ins for what a test cannot have for real. (The runner double is ``fake_runner.FakeRunner``.)

``FakeOpenAIServer`` plays ocrd's HTTP API for tests of ``ocrctl ocr``: what is under test there is
the client (what it sends, how it shows answers and errors), and the real HTTP app has its own
tests. It is a real HTTP server on a loopback port, so the client's real httpx code path runs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: dict[str, Any]


class FakeOpenAIServer:
    """Answers ``POST /v1/chat/completions`` with ``reply`` as the text, or with ``error``.

    ``error = (404, "model 'x' does not exist")`` makes every answer an OpenAI error envelope.
    """

    def __init__(self, reply: str = "fake recognised text"):
        self.reply = reply
        self.error: tuple[int, str] | None = None
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.error is not None:
            status, message = self.error
            kind = "invalid_request_error" if status < 500 else "server_error"
            return status, {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(RecordedRequest(self.path, body))
                status, payload = fake.answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
