"""Idle keep-alive on a real daemon: an idle model's runner process ends on its own, a pinned one
stays, and a request that outlasts the keep-alive is never cut off.

Every model here has a 1 s keep-alive and the reaper looks every 0.2 s, so nothing the test must
look at may be left idle and unpinned while it looks: runners are pinned until their pid is read
(a reload then unpins them), and the long request is held by an upstream that answers only when
the test lets it. Each test has a daemon of its own, since the reloads change its configuration.
"""

from __future__ import annotations

import json
import threading
import time

from tests.support.daemon import (
    HTTP_TIMEOUT,
    deep_merge,
    ocr_messages,
    pid_alive,
    running_daemon,
    wait_until,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.render import char_accuracy, render_text_image

PPOCR, TESSERACT = "builtin/ppocr", "builtin/tesseract"
HELD, WITNESS = "org/held", "org/witness"  # upstream models
KEEP_ALIVE = 1.0


def config(**models: dict) -> dict:
    """The reaper every 0.2 s, and a 1 s keep-alive for ``models`` (with their other settings)."""
    return {"scheduler": {"reap_interval": "0.2s"},
            "models": {name: {"keep_alive": f"{KEEP_ALIVE:g}s", **extra} for name, extra in models.items()}}


def unpin(daemon, model: str) -> None:
    daemon.reload(deep_merge(daemon.config, {"models": {model: {"pinned": False}}}))


def _ocr(daemon, model: str, lines: list[str]) -> str:
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model=model, messages=ocr_messages(render_text_image(lines))
        )
    return reply.choices[0].message.content


def test_idle_runner_exits_on_its_own_after_its_keep_alive():
    with running_daemon(config(ppocr={"pinned": True})) as daemon:
        assert char_accuracy("idle soon", _ocr(daemon, "ppocr", ["idle soon"])) >= 0.9
        (pid,) = daemon.runner_pids()
        assert daemon.ps()[PPOCR]["pid"] == pid
        unpin(daemon, "ppocr")  # idle for its keep-alive already, or soon
        models = json.loads(daemon.ocrctl("models", "--json").stdout)["models"]
        assert {m["id"]: m for m in models}[PPOCR]["keep_alive_seconds"] == KEEP_ALIVE

        wait_until(lambda: not pid_alive(pid), timeout=30, message="the idle runner exiting")
        wait_until(lambda: PPOCR not in daemon.ps(), timeout=10, message="ps no longer listing it")
        assert pid not in daemon.runner_pids()


def test_pinned_model_outlives_its_keep_alive():
    with running_daemon(config(tesseract={"pinned": True}, ppocr={"pinned": True})) as daemon:
        _ocr(daemon, "tesseract", ["pinned model"])
        _ocr(daemon, "ppocr", ["witness"])
        pinned, witness = daemon.ps()[TESSERACT], daemon.ps()[PPOCR]
        assert pinned["pinned"] is True and set(daemon.runner_pids()) == {pinned["pid"], witness["pid"]}
        unpin(daemon, "ppocr")

        # The unpinned model, used after the pinned one with the same keep-alive, going shows the
        # reaper has run past the pinned one's keep-alive...
        wait_until(lambda: not pid_alive(witness["pid"]), timeout=30, message="the unpinned runner exiting")
        time.sleep(5 * 0.2)  # ...and a few more reaper rounds for good measure.
        still = daemon.ps()[TESSERACT]
        assert still["state"] == "MODEL_STATE_READY" and still["pid"] == pinned["pid"]
        assert pid_alive(pinned["pid"])
        assert "ocrd" in _ocr(daemon, "tesseract", ["ocrd still here"])
        assert daemon.ps()[TESSERACT]["pid"] == pinned["pid"]


def test_request_longer_than_the_keep_alive_is_not_cut_off():
    with FakeUpstream(HELD) as held, FakeUpstream(WITNESS) as witness:
        held.behaviour = "slow"  # answers once the test sets held.release
        upstreams = {"upstreams": [{"model": HELD, "url": held.url}, {"model": WITNESS, "url": witness.url}]}
        with running_daemon(deep_merge(config(**{HELD: {}, WITNESS: {}}), upstreams)) as daemon:
            assert daemon.ocrctl("load", HELD).returncode == 0  # its keep-alive counts from here
            with daemon.openai_client() as client:  # the witness: last used after that load
                client.chat.completions.create(model=WITNESS, messages=[{"role": "user", "content": "w"}])
            answers: list = []

            def request() -> None:
                with daemon.openai_client() as client:
                    answers.append(client.chat.completions.create(
                        model=HELD, messages=[{"role": "user", "content": "longer than 1s"}]))

            worker = threading.Thread(target=request)
            worker.start()
            try:
                wait_until(lambda: daemon.ps()[HELD]["in_flight"] == 1, timeout=60,
                           message="the request in flight")
                # The witness reaped: the held model has been idle-by-the-clock longer than its
                # keep-alive too, and only its request keeps it.
                wait_until(lambda: WITNESS not in daemon.ps(), timeout=30, message="the witness reaped")
                kept = daemon.ps()[HELD]
                assert (kept["state"], kept["in_flight"]) == ("MODEL_STATE_READY", 1)
            finally:
                held.release.set()
                worker.join(HTTP_TIMEOUT)
            assert answers[0].choices[0].message.content == f"fake-vllm {HELD} read: longer than 1s"
            # Idle now: its keep-alive counts from the end of the request.
            wait_until(lambda: HELD not in daemon.ps(), timeout=30, message="the model reaped after the request")
