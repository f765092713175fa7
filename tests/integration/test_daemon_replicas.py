"""``[models.X] replicas`` under a real ``ocrd serve``: two real PP-OCR runner processes of one
model, concurrent requests served by both, one killed while the other keeps serving, both gone
after an unload."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.daemon import ocr_messages, pid_alive, running_daemon, wait_until
from tests.support.render import render_text_image

MODEL = "builtin/ppocr"
ACCESS = '"POST /v1/chat/completions HTTP/1.1" 200'  # a runner's access-log line for a request


@pytest.fixture(scope="module")
def daemon():
    with running_daemon({"models": {MODEL: {"replicas": 2}}}) as running:
        yield running


def ocr(daemon, text: str) -> str:
    with daemon.openai_client() as client:
        answer = client.chat.completions.create(model="ppocr", messages=ocr_messages(render_text_image([text])))
    return answer.choices[0].message.content or ""


def test_two_replicas_run_and_both_serve(daemon):
    assert daemon.ocrctl("load", "ppocr").returncode == 0
    model = daemon.ps()[MODEL]
    pids = model["replica_pids"]
    assert len(pids) == 2 and model["pid"] == pids[0]
    assert all(pid in daemon.runner_pids() for pid in pids)
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda n: ocr(daemon, f"PAGE {n}"), range(8)))
    assert all("PAGE" in text.upper() for text in texts)
    logs = daemon.ocrctl("logs", "ppocr", "--tail", "200").stdout
    for number in (1, 2):  # each replica answered some of them
        assert any(line.startswith(f"[replica {number}]") and ACCESS in line for line in logs.splitlines()), logs
    table = daemon.ocrctl("ps").stdout
    assert f"{pids[0]},{pids[1]}" in table


def test_a_killed_replica_leaves_the_other_serving_and_an_unload_ends_both(daemon):
    pids = daemon.ps()[MODEL]["replica_pids"]
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: daemon.ps()[MODEL]["replica_pids"] == [pids[1]], timeout=30)
    assert daemon.ps()[MODEL]["state"] == "MODEL_STATE_READY"
    assert all("HELLO" in ocr(daemon, "HELLO AGAIN").upper() for _ in range(3))
    assert daemon.ocrctl("unload", "ppocr").returncode == 0
    wait_until(lambda: not pid_alive(pids[1]), timeout=30)
