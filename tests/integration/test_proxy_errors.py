"""What a client of ocrd gets when an upstream server misbehaves, and what /metrics counts.

A real ``ocrd serve`` routes to real HTTP servers in the test process (``FakeUpstream``), switched
to each failure in turn: OpenAI errors pass through with their status; garbage is 502, a refused
connection 503, an upstream slower than its timeout 504; every error body is OpenAI's envelope
(checked against the published OpenAPI schema), streaming requests included, and the per-model
request counter records each with the status the client got.
"""

from __future__ import annotations

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import assert_openai_error, running_daemon
from tests.support.fake_upstream import FakeUpstream

MODEL = "acme/fake-ocr"
SLOW_MODEL = "acme/slow-ocr"
GONE_MODEL = "acme/gone-ocr"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def upstreams():
    with FakeUpstream(MODEL) as main, FakeUpstream(SLOW_MODEL) as slow, FakeUpstream(GONE_MODEL) as gone:
        yield {"main": main, "slow": slow, "gone": gone}


@pytest.fixture(scope="module")
def daemon(upstreams):
    config = {"upstreams": [
        {"model": MODEL, "url": upstreams["main"].url},
        {"model": SLOW_MODEL, "url": upstreams["slow"].url, "timeout": "1s"},
        {"model": GONE_MODEL, "url": upstreams["gone"].url},
    ]}
    with running_daemon(config) as running:
        yield running


@pytest.fixture
def upstream(upstreams):
    main = upstreams["main"]
    yield main
    main.behaviour = "normal"


def chat(daemon, model: str = MODEL, **extra):
    with daemon.http() as http:
        return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra})


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_openai_error_passes_through_with_its_status(daemon, upstream, stream) -> None:
    upstream.behaviour = "error"
    error = assert_openai_error(chat(daemon, stream=stream), 400)
    assert error["message"] == "max_tokens is too large for this model"
    # vLLM sends its status as an integer code; OpenAI's schema (checked above) wants a string.
    assert (error["type"], error["param"], error["code"]) == ("BadRequestError", "max_tokens", "400")


def test_the_openai_client_sees_an_upstream_error_as_its_own_exception(daemon, upstream) -> None:
    upstream.behaviour = "error"
    with daemon.openai_client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 400 and "max_tokens is too large" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("behaviour", ["html", "truncated", "no_choices"])
def test_garbage_from_the_upstream_is_a_502(daemon, upstream, behaviour, stream) -> None:
    upstream.behaviour = behaviour
    error = assert_openai_error(chat(daemon, stream=stream), 502)
    assert error["code"] == "upstream_error"
    assert upstream.url in error["message"], error["message"]


def test_an_upstream_slower_than_its_timeout_is_a_504(daemon, upstreams) -> None:
    slow = upstreams["slow"]
    assert chat(daemon, SLOW_MODEL).status_code == 200  # loaded, and fast enough when it is
    slow.behaviour = "slow"
    try:
        error = assert_openai_error(chat(daemon, SLOW_MODEL), 504)
    finally:
        slow.release.set()
    assert error["code"] == "upstream_timeout" and "1s" in error["message"], error


def test_an_upstream_that_went_away_is_a_503(daemon, upstreams) -> None:
    assert chat(daemon, GONE_MODEL).status_code == 200
    upstreams["gone"].stop()
    error = assert_openai_error(chat(daemon, GONE_MODEL), 503)
    assert "Connection refused" in error["message"], error
    for stream in (False, True):
        assert_openai_error(chat(daemon, GONE_MODEL, stream=stream), 503)


def request_counts(daemon, model: str) -> tuple[dict[str, float], float]:
    """``ocrd_requests_total`` by status and the latency histogram's count, for ``model``."""
    with daemon.http() as http:
        text = http.get("/metrics").text
    counts: dict[str, float] = {}
    observed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == "ocrd_requests_total":
                counts[sample.labels["status"]] = sample.value
            elif sample.name == "ocrd_request_duration_seconds_count":
                observed = sample.value
    return counts, observed


def test_metrics_count_proxied_requests_by_the_status_the_client_got(daemon, upstream) -> None:
    before, observed_before = request_counts(daemon, MODEL)
    statuses = []
    for behaviour, stream in [("normal", False), ("normal", True), ("error", False),
                              ("error", True), ("html", False), ("no_choices", True)]:
        upstream.behaviour = behaviour
        statuses.append(chat(daemon, stream=stream).status_code)
    assert statuses == [200, 200, 400, 400, 502, 502]
    after, observed_after = request_counts(daemon, MODEL)
    grown = {status: after[status] - before.get(status, 0.0) for status in after}
    assert {s: n for s, n in grown.items() if n} == {"200": 2.0, "400": 2.0, "502": 2.0}
    assert observed_after - observed_before == 6.0
