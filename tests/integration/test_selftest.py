"""``ocrctl selftest``: the rendered test image goes through a real ``ocrd serve`` to the real
builtin engines (PP-OCR, and Tesseract when it is installed) and the expected text must come
back; how failures are reported is checked against a stand-in of the HTTP API (as for
``ocrctl ocr``), since the real engines read the test image correctly."""

from __future__ import annotations

import json
import shutil

import pytest

from ocrctl.commands.selftest import EXPECTED_TEXT
from tests.support.control import PPOCR
from tests.support.daemon import running_daemon
from tests.support.fakes import FakeOpenAIServer

TESSERACT = "builtin/tesseract"


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


def test_nothing_loaded_and_no_model_named_is_one_line_saying_what_to_do(daemon):
    result = daemon.ocrctl("selftest")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("ocrctl: no model is loaded: load one (ocrctl load MODEL) or name one "
                             "(ocrctl selftest MODEL)\n")


def test_selftest_of_a_named_model_loads_it_and_ppocr_reads_the_text_exactly(daemon):
    result = daemon.ocrctl("selftest", "ppocr")
    assert result.returncode == 0, result.stdout + result.stderr
    title, header, row = result.stdout.splitlines()
    assert title == f"test image: {EXPECTED_TEXT!r}"
    assert header.split() == ["MODEL", "ENGINE", "RESULT", "LATENCY", "TOKENS/S", "MEMORY"]
    model, engine, verdict, latency, tokens_per_second, *memory = row.split()
    assert (model, engine, verdict) == (PPOCR, "builtin", "pass")
    assert latency.endswith("s") and float(latency[:-1]) > 0
    assert float(tokens_per_second) > 0 and memory[-1] in ("MiB", "GiB")
    assert PPOCR in daemon.ps()


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_selftest_sends_the_image_to_every_loaded_model(daemon):
    assert daemon.ocrctl("load", "tesseract").returncode == 0
    result = daemon.ocrctl("selftest", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["expected_text"] == EXPECTED_TEXT
    outcomes = {outcome["model"]: outcome for outcome in report["results"]}
    assert set(outcomes) == {PPOCR, TESSERACT}
    for outcome in outcomes.values():
        # What each engine really read, not only its verdict.
        assert " ".join(outcome["output"].split()) == EXPECTED_TEXT, outcome
        assert outcome["passed"] and not outcome["error"]
        assert outcome["completion_tokens"] == len(EXPECTED_TEXT.split())  # builtin: tokens are words
        assert outcome["memory_bytes"] > 0 and outcome["latency_seconds"] > 0


# --- reporting, against a stand-in of the HTTP API -----------------------------------------------


@pytest.fixture
def openai_server(daemon_info):
    with FakeOpenAIServer() as server:
        daemon_info.http_url = server.url  # GetStatus tells ocrctl where the HTTP API is
        yield server


async def test_a_wrong_text_from_an_ocr_engine_fails_and_says_what_came_back(ocrctl, scheduler, openai_server):
    await scheduler.load("ppocr")
    openai_server.reply = "Hello from ocrd 41"
    result = await ocrctl("selftest")
    assert result.rc == 1
    assert result.out.splitlines()[2].split()[:3] == [PPOCR, "builtin", "FAIL"]
    assert result.out.splitlines()[-1] == f"{PPOCR}: expected {EXPECTED_TEXT!r}, got 'Hello from ocrd 41'"
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions" and request.body["model"] == PPOCR
    assert "max_tokens" not in request.body  # builtin engines count words: never cut them
    (part,) = request.body["messages"][0]["content"]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


async def test_case_and_spacing_do_not_matter_to_an_ocr_engines_verdict(ocrctl, scheduler, openai_server):
    await scheduler.load("ppocr")
    openai_server.reply = "  hello FROM\nocrd   42 \n"
    result = await ocrctl("selftest")
    assert result.rc == 0, result.out


async def test_an_http_error_fails_that_model_with_the_servers_message(ocrctl, scheduler, openai_server):
    await scheduler.load("ppocr")
    openai_server.error = (503, "the runner of builtin/ppocr crashed")
    result = await ocrctl("selftest")
    assert result.rc == 1
    assert result.out.splitlines()[-1] == (f"{PPOCR}: expected {EXPECTED_TEXT!r}, "
                                           f"the runner of builtin/ppocr crashed")
