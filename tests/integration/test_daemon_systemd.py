"""The sd_notify protocol as systemd sees it: a real datagram socket as ``$NOTIFY_SOCKET``, real
signals (SIGTERM, SIGHUP) sent to a real ``ocrd serve``.

Each test starts its own daemon: they stop it, reload it or watch it from its first datagram.
"""

from __future__ import annotations

import json
import signal
import threading

from tests.support.daemon import (
    HTTP_TIMEOUT,
    assert_no_runner_survives,
    ocr_messages,
    running_daemon,
    wait_until,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.render import char_accuracy, render_text_image

PPOCR = "builtin/ppocr"
HELD = "org/held"  # an upstream model whose answers the test holds


def _ocr(daemon, lines: list[str]) -> str:
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model="ppocr", messages=ocr_messages(render_text_image(lines))
        )
    return reply.choices[0].message.content


def _models(daemon) -> dict[str, dict]:
    result = daemon.ocrctl("models", "--json")
    assert result.returncode == 0, result.stderr
    return {m["id"]: m for m in json.loads(result.stdout)["models"]}


def test_notifications_go_ready_then_status_per_model_then_stopping_and_exit_0():
    with running_daemon() as daemon:
        first = daemon.notifications[0]
        assert first.has("READY=1"), first.text
        # READY=1 only once both listeners are bound: at that moment both accepted connections.
        assert first.probe == (True, True)
        assert first.fields["MAINPID"] == str(daemon.pid)

        assert "ocrd" in _ocr(daemon, ["ocrd reads this"])
        ready = daemon.wait_notification(
            lambda n: f"{PPOCR} (ready)" in n.fields.get("STATUS", "")
        )
        loading = daemon.wait_notification(lambda n: f"{PPOCR} (loading)" in n.fields.get("STATUS", ""))
        assert daemon.notifications.index(loading) < daemon.notifications.index(ready)
        assert daemon.runner_pids()

        count = len(daemon.notifications)
        assert daemon.stop() == 0
        after = daemon.notifications[count:]
        assert any(n.has("STOPPING=1") for n in after), [n.text for n in after]
        assert not any(n.has("READY=1") for n in after)
        assert_no_runner_survives(daemon)
        # No watchdog was asked for ($WATCHDOG_USEC unset), so none was sent.
        assert not any("WATCHDOG=1" in n.text.splitlines() for n in daemon.notifications)


def test_watchdog_pings_arrive_when_watchdog_usec_is_set():
    with running_daemon(env={"WATCHDOG_USEC": "200000"}) as daemon:
        # Pings every WATCHDOG_USEC/2; several must arrive while the daemon idles.
        wait_until(lambda: sum(n.has("WATCHDOG=1") for n in daemon.notifications) >= 5,
                   timeout=30, message="five WATCHDOG=1 datagrams")
        ready = next(i for i, n in enumerate(daemon.notifications) if n.has("READY=1"))
        first_ping = next(i for i, n in enumerate(daemon.notifications) if n.has("WATCHDOG=1"))
        assert ready < first_ping


def test_watchdog_pings_go_on_while_a_request_is_being_served():
    # WATCHDOG=1 comes from the event loop, which also awaits the answer of the model serving a
    # request: a long request must not stop the pings. The model here is an upstream that answers
    # only when the test lets it, so the request lasts as long as the pings take to come.
    with FakeUpstream(HELD) as upstream:
        upstream.behaviour = "slow"
        config = {"upstreams": [{"model": HELD, "url": upstream.url}]}
        with running_daemon(config, env={"WATCHDOG_USEC": "200000"}) as daemon:
            assert daemon.ocrctl("load", HELD).returncode == 0
            answers: list = []

            def pings(since: int) -> int:
                return sum(n.has("WATCHDOG=1") for n in daemon.notifications[since:])

            def request() -> None:
                with daemon.openai_client() as client:
                    answers.append(client.chat.completions.create(
                        model=HELD, messages=[{"role": "user", "content": "held"}]))

            worker = threading.Thread(target=request)
            worker.start()
            try:
                wait_until(lambda: daemon.ps()[HELD]["in_flight"] == 1, timeout=60,
                           message="the request in flight")
                count = len(daemon.notifications)
                wait_until(lambda: pings(count) >= 3, timeout=60, message="three pings")
                assert daemon.ps()[HELD]["in_flight"] == 1 and not answers  # still being served
            finally:
                upstream.release.set()
                worker.join(HTTP_TIMEOUT)
            assert answers[0].choices[0].message.content == f"fake-vllm {HELD} read: held"


def test_sighup_reloads_a_changed_config_and_keeps_the_old_one_when_broken():
    with running_daemon() as daemon:
        assert _models(daemon)[PPOCR]["keep_alive_seconds"] == 300
        assert daemon.ocrctl("load", "ppocr").returncode == 0
        pid = daemon.ps()[PPOCR]["pid"]

        count = len(daemon.notifications)
        daemon.write_config({**daemon.config, "scheduler": {"keep_alive": "17m"}})
        daemon.send_signal(signal.SIGHUP)
        ready = daemon.wait_ready(after=count)
        reloading = daemon.wait_notification(lambda n: n.has("RELOADING=1"), after=count)
        assert daemon.notifications.index(reloading) < daemon.notifications.index(ready)
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        assert daemon.ps()[PPOCR]["keep_alive_seconds"] == 17 * 60
        assert _models(daemon)["builtin/tesseract"]["keep_alive_seconds"] == 17 * 60
        assert daemon.ps()[PPOCR]["pid"] == pid  # a reload does not restart runners

        count = len(daemon.notifications)
        # Broken by one bad value, then not TOML at all: both rejected, the old config kept.
        daemon.write_config({**daemon.config, "scheduler": {"keep_alive": "soon"}})
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_notification(lambda n: n.has("RELOADING=1"), after=count)
        daemon.wait_ready(after=count)
        daemon.write_config_text("this is [not toml\n")
        count = len(daemon.notifications)
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_ready(after=count)
        assert daemon.process.poll() is None
        assert daemon.ps()[PPOCR]["keep_alive_seconds"] == 17 * 60
        assert "configuration not reloaded" in daemon.stderr()
        assert char_accuracy("still serving", _ocr(daemon, ["still serving"])) >= 0.9

        assert daemon.stop() == 0


def test_sigterm_drains_an_in_flight_request_before_exiting_0():
    # The request is held by an upstream that answers only when the test lets it: it is in flight
    # when SIGTERM arrives and still in flight once STOPPING=1 is out, whatever the machine's speed.
    with FakeUpstream(HELD) as upstream:
        upstream.behaviour = "slow"
        with running_daemon({"upstreams": [{"model": HELD, "url": upstream.url}]}) as daemon:
            assert daemon.ocrctl("load", "ppocr").returncode == 0  # a runner to stop at the end
            result: dict = {}

            def request():
                with daemon.http() as http:
                    result["response"] = http.post("/v1/chat/completions", json={
                        "model": HELD, "messages": [{"role": "user", "content": "drained"}]})

            worker = threading.Thread(target=request)
            worker.start()
            try:
                wait_until(lambda: daemon.ps()[HELD]["in_flight"] == 1, timeout=60,
                           message="the request in flight")
                runners = daemon.runner_pids()
                daemon.send_signal(signal.SIGTERM)
                daemon.wait_notification(lambda n: n.has("STOPPING=1"))
                assert "response" not in result and daemon.process.poll() is None  # draining
            finally:
                upstream.release.set()
                worker.join(HTTP_TIMEOUT)
            assert not worker.is_alive()
            response = result["response"]
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == f"fake-vllm {HELD} read: drained"
            assert daemon.stop() == 0
            assert runners and not any(pid in daemon.surviving_runners() for pid in runners)
            assert_no_runner_survives(daemon)


def test_sigint_stops_like_sigterm():
    with running_daemon() as daemon:
        daemon.send_signal(signal.SIGINT)
        daemon.wait_notification(lambda n: n.has("STOPPING=1"))
        assert daemon.process.wait(timeout=60) == 0
