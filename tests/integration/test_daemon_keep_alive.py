"""Idle keep-alive on a real daemon: an idle model's runner process ends on its own, a pinned one
stays, and a request that outlasts the keep-alive is never cut off.

One daemon for the module: ppocr with a 1 s keep-alive; tesseract with the same keep-alive but
pinned; the reaper looks every 0.2 s.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest

from tests.support.daemon import ocr_messages, pid_alive, running_daemon, wait_until
from tests.support.render import char_accuracy, render_text_image

PPOCR, TESSERACT = "builtin/ppocr", "builtin/tesseract"
KEEP_ALIVE = 1.0


@pytest.fixture(scope="module")
def daemon():
    config = {
        "scheduler": {"reap_interval": "0.2s"},
        "models": {
            "ppocr": {"keep_alive": f"{KEEP_ALIVE:g}s"},
            "tesseract": {"keep_alive": f"{KEEP_ALIVE:g}s", "pinned": True},
        },
    }
    with running_daemon(config) as running:
        yield running


def _ocr(daemon, model: str, lines: list[str]) -> str:
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model=model, messages=ocr_messages(render_text_image(lines))
        )
    return reply.choices[0].message.content


def test_idle_runner_exits_on_its_own_after_its_keep_alive(daemon):
    assert char_accuracy("idle soon", _ocr(daemon, "ppocr", ["idle soon"])) >= 0.9
    # Read from /proc at once: an ocrctl call can take longer than the 1 s keep-alive on a busy
    # machine, and the runner may already be gone by the time it answers.
    (pid,) = daemon.runner_pids()
    models = json.loads(daemon.ocrctl("models", "--json").stdout)["models"]
    assert {m["id"]: m for m in models}[PPOCR]["keep_alive_seconds"] == KEEP_ALIVE

    wait_until(lambda: not pid_alive(pid), timeout=30, message="the idle runner exiting")
    wait_until(lambda: PPOCR not in daemon.ps(), timeout=10, message="ps no longer listing it")
    assert pid not in daemon.runner_pids()


def test_pinned_model_outlives_its_keep_alive(daemon):
    _ocr(daemon, "tesseract", ["pinned model"])
    _ocr(daemon, "ppocr", ["witness"])
    runners = set(daemon.runner_pids())  # at once, before the witness's 1 s keep-alive can pass
    pinned = daemon.ps()[TESSERACT]  # pinned: no race
    assert pinned["pinned"] is True
    (witness,) = runners - {pinned["pid"]}

    # The unpinned model with the same keep-alive going shows the reaper has run past it...
    wait_until(lambda: not pid_alive(witness), timeout=30, message="the unpinned runner exiting")
    time.sleep(5 * 0.2)  # ...and a few more reaper rounds for good measure.
    still = daemon.ps()[TESSERACT]
    assert still["state"] == "MODEL_STATE_READY" and still["pid"] == pinned["pid"]
    assert pid_alive(pinned["pid"])
    assert "ocrd" in _ocr(daemon, "tesseract", ["ocrd still here"])
    assert daemon.ps()[TESSERACT]["pid"] == pinned["pid"]


def test_request_longer_than_the_keep_alive_is_not_cut_off(daemon):
    lines = [f"Line {i}: longer than the keep-alive" for i in range(30)]
    # The request runs in a thread; meanwhile the runner serving it is watched. Loading is left to
    # the request itself (auto-load), so no keep-alive can expire between a load and the request.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        reply = pool.submit(_ocr, daemon, "ppocr", lines)
        seen: set[int] = set()
        while not reply.done():
            slot = daemon.ps().get(PPOCR)
            if slot and slot["in_flight"] and slot["pid"]:
                seen.add(slot["pid"])
            time.sleep(0.05)
        text = reply.result()  # fails (502) if its runner is reaped mid-request
        took = time.monotonic() - started
    assert char_accuracy("\n".join(lines), text) >= 0.95
    assert len(seen) <= 1, f"the runner changed while the request was in flight: {seen}"
    if took <= KEEP_ALIVE + 0.5 or not seen:
        pytest.skip(f"the request took {took:.1f}s, not longer than the keep-alive: inconclusive")
    (pid,) = seen
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the runner reaped after the request")
