"""A runner killed with SIGKILL in the middle of a request: the client gets an error in OpenAI's
shape (never a hang), ``ocrctl ps`` says the model failed and why, the next request loads the
model again in a new process, and the daemon keeps serving.

One daemon for the module; each test kills the runner it started and leaves a fresh one behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from tests.support.daemon import (
    HTTP_TIMEOUT,
    assert_openai_error,
    ocr_messages,
    pid_alive,
    running_daemon,
    wait_until,
)
from tests.support.openapi import validate
from tests.support.render import char_accuracy, render_text_image

PPOCR = "builtin/ppocr"
# Sixty lines keep the runner busy for a good while, so the kill lands mid-request.
LONG_PAGE = render_text_image([f"Line {i}: a long page keeps the runner busy" for i in range(60)])


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


@pytest.fixture
def loaded(daemon):
    result = daemon.ocrctl("load", "ppocr")
    assert result.returncode == 0, result.stderr
    return daemon.ps()[PPOCR]["pid"]


def _kill_when_in_flight(daemon, pid: int) -> None:
    wait_until(lambda: daemon.ps()[PPOCR]["in_flight"] == 1, timeout=60, interval=0.05,
               message="the request in flight")
    os.kill(pid, signal.SIGKILL)


def _assert_failed_then_recovers(daemon, old_pid: int) -> None:
    model = wait_until(lambda: (m := daemon.ps()[PPOCR])["state"] == "MODEL_STATE_FAILED" and m,
                       timeout=30, message="ps showing the model FAILED")
    assert "SIGKILL" in model["error"], model["error"]
    assert model["pid"] == 0 and model["in_flight"] == 0
    table = daemon.ocrctl("ps").stdout
    assert "failed" in table and model["error"] in table

    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model="ppocr", messages=ocr_messages(render_text_image(["back in business"]))
        )
    assert char_accuracy("back in business", reply.choices[0].message.content) >= 0.9
    model = daemon.ps()[PPOCR]
    assert model["state"] == "MODEL_STATE_READY" and model["error"] == ""
    assert model["pid"] != old_pid and pid_alive(model["pid"])
    assert not pid_alive(old_pid)
    assert daemon.process.poll() is None
    with daemon.http() as http:
        assert http.get("/health").status_code == 200


def test_runner_killed_mid_request_fails_that_request_and_reloads_on_the_next(daemon, loaded):
    result: dict = {}

    def request():
        with daemon.http() as http:
            result["response"] = http.post("/v1/chat/completions", json={
                "model": "ppocr", "messages": ocr_messages(LONG_PAGE)})

    worker = threading.Thread(target=request)
    worker.start()
    try:
        _kill_when_in_flight(daemon, loaded)
    finally:
        worker.join(HTTP_TIMEOUT)
    assert not worker.is_alive(), "the request hung after its runner died"
    response = result["response"]
    assert response.status_code in (502, 503), response.text
    error = assert_openai_error(response, response.status_code)
    assert error["type"] == "server_error"
    _assert_failed_then_recovers(daemon, loaded)


def test_runner_killed_mid_stream_ends_the_stream_with_an_error_event_then_done(daemon, loaded):
    body = {"model": "ppocr", "stream": True, "messages": ocr_messages(LONG_PAGE)}
    events: list[str] = []
    with daemon.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            events.append(line)
            if len(events) == 1:
                # The role chunk: the runner has the request. Kill it now.
                first = json.loads(events[0].removeprefix("data: "))
                assert first["choices"][0]["delta"]["role"] == "assistant"
                os.kill(loaded, signal.SIGKILL)

    assert all(line.startswith("data: ") for line in events), events
    assert events[-1] == "data: [DONE]", events
    error_event = json.loads(events[-2].removeprefix("data: "))
    validate("ErrorResponse", error_event)
    assert error_event["error"]["type"] == "server_error"
    assert error_event["error"]["message"]
    # Nothing but the role chunk (and perhaps text) came before the error.
    for line in events[:-2]:
        validate("CreateChatCompletionStreamResponse", json.loads(line.removeprefix("data: ")))
    _assert_failed_then_recovers(daemon, loaded)
