"""The load gauges a router picks nodes by (ocrd.metrics, docs/scale-out.md), read from a real
``ocrd serve`` while real PP-OCR requests run: one PP-OCR runner, three requests at once, so one
runs and two wait, and ``/metrics`` says so for the model and for the whole node; once they are
answered, nothing runs or waits. The per-model state and memory gauges are there beside them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.daemon import HTTP_TIMEOUT, ocr_messages, running_daemon, wait_until
from tests.support.render import render_text_image

PPOCR = "builtin/ppocr"
# About a second of PP-OCR each on a quiet two-core machine: the test reads the gauges meanwhile.
PAGE = render_text_image([f"Line {i} of a page that keeps the runner busy" for i in range(24)])


def gauges(http: httpx.Client) -> dict[str, float]:
    """Every sample of /metrics without a label, and those labelled with ppocr alone."""
    values = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        if "{" not in name or name.endswith(f'{{model="{PPOCR}"}}') or f'model="{PPOCR}",state="ready"' in name:
            values[name] = float(value)
    return values


def test_running_and_waiting_requests_show_while_a_slow_request_runs():
    config = {"models": {PPOCR: {"replicas": 1}}}  # one request at a time, whatever the cores
    with running_daemon(config) as daemon, daemon.http() as http:
        body = {"model": PPOCR, "messages": ocr_messages(render_text_image(["WARM 1"]))}
        assert http.post("/v1/chat/completions", json=body).status_code == 200  # loaded now
        idle = gauges(http)
        assert (idle["ocrd_requests_running"], idle["ocrd_requests_waiting"]) == (0, 0)
        assert idle["ocrd_capacity_used_ratio"] == 0
        assert idle[f'ocrd_model_state{{model="{PPOCR}",state="ready"}}'] == 1
        assert idle[f'ocrd_model_memory_bytes{{model="{PPOCR}"}}'] > 0

        def one(_: int) -> int:
            with daemon.http() as client:
                return client.post("/v1/chat/completions", json={
                    "model": PPOCR, "messages": ocr_messages(PAGE)}).status_code

        with ThreadPoolExecutor(3) as pool:
            answers = pool.map(one, range(3))
            busy = wait_until(lambda: (g := gauges(http))["ocrd_requests_waiting"] == 2 and g,
                              timeout=HTTP_TIMEOUT, interval=0.02,
                              message="two requests waiting behind a running one")
            statuses = list(answers)
        assert statuses == [200, 200, 200]

        assert busy["ocrd_requests_running"] == 1
        assert busy[f'ocrd_model_in_flight{{model="{PPOCR}"}}'] == 1
        assert busy[f'ocrd_model_queued{{model="{PPOCR}"}}'] == 2
        assert busy[f'ocrd_model_capacity_used_ratio{{model="{PPOCR}"}}'] == 1.0
        assert busy["ocrd_capacity_used_ratio"] == 1.0  # ppocr is the only model loaded

        # The last lease is returned as its response ends, a moment after the client has it.
        after = wait_until(lambda: (g := gauges(http))["ocrd_requests_running"] == 0 and g,
                           timeout=10, interval=0.02, message="nothing running once answered")
        assert (after["ocrd_requests_waiting"], after["ocrd_capacity_used_ratio"]) == (0, 0)
