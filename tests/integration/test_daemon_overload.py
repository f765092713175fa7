"""Fifty concurrent requests against a model whose queue holds eight: every request ends (no hang,
no silent drop), the overflow gets 429 with ``Retry-After`` in OpenAI's error shape, and when it
is over nothing is left in flight or queued.

Against ppocr (a real runner) how many are refused depends on how fast it reads; against an
upstream that holds every answer until the test lets it go, exactly one request is served, eight
wait and the other 41 are refused, each with ``Retry-After`` = (8 waiting + this one) x the model's
recent pace, which is 1 s before any request of it has finished (ocrd.core.scheduler).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.daemon import HTTP_TIMEOUT, assert_openai_error, ocr_messages, running_daemon
from tests.support.fake_upstream import FakeUpstream
from tests.support.render import char_accuracy, render_text_image

PPOCR = "builtin/ppocr"
SLOW = "org/slow"
QUEUE_SIZE = 8
REQUESTS = 50


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(SLOW) as fake:
        fake.behaviour = "slow"  # answers once the test sets fake.release
        yield fake


@pytest.fixture(scope="module")
def daemon(upstream):
    config = {
        "scheduler": {"queue_size": QUEUE_SIZE},
        "upstreams": [{"model": SLOW, "url": upstream.url}],
        "models": {SLOW: {"max_concurrent_requests": 1}},
    }
    with running_daemon(config) as running:
        yield running


def _text(i: int) -> str:
    return f"Request {i} of many"


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=REQUESTS * 2, max_keepalive_connections=REQUESTS * 2)


async def test_a_burst_on_a_held_model_refuses_all_but_one_served_and_eight_waiting_with_exact_retry_after(
        daemon, upstream):
    assert daemon.ocrctl("load", SLOW).returncode == 0
    async with httpx.AsyncClient(base_url=daemon.base_url, timeout=HTTP_TIMEOUT, limits=_limits()) as http:

        async def one(i: int) -> httpx.Response:
            return await http.post("/v1/chat/completions", json={
                "model": SLOW, "messages": [{"role": "user", "content": _text(i)}]})

        requests = [asyncio.create_task(one(i)) for i in range(REQUESTS)]
        refusals = REQUESTS - 1 - QUEUE_SIZE
        deadline = time.monotonic() + HTTP_TIMEOUT  # hang guard
        while sum(r.done() for r in requests) < refusals and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        held = (await asyncio.to_thread(daemon.ps))[SLOW]
        assert (held["in_flight"], held["queued"]) == (1, QUEUE_SIZE)
        assert sum(r.done() for r in requests) == refusals  # nothing served while held
        upstream.release.set()
        responses = await asyncio.wait_for(asyncio.gather(*requests), timeout=HTTP_TIMEOUT)

    served = [i for i, r in enumerate(responses) if r.status_code == 200]
    rejected = [r for r in responses if r.status_code != 200]
    assert (len(served), len(rejected)) == (1 + QUEUE_SIZE, refusals)
    for i in served:
        assert responses[i].json()["choices"][0]["message"]["content"] == f"fake-vllm {SLOW} read: {_text(i)}"
    for response in rejected:
        error = assert_openai_error(response, 429)
        assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
        assert response.headers["Retry-After"] == str(QUEUE_SIZE + 1)  # 9 requests at 1 s each
    model = daemon.ps()[SLOW]
    assert (model["in_flight"], model["queued"]) == (0, 0)


async def test_a_burst_beyond_the_queue_gets_429_with_retry_after_and_the_rest_complete(daemon):
    assert daemon.ocrctl("load", "ppocr").returncode == 0
    images = [render_text_image([_text(i)]) for i in range(REQUESTS)]
    async with httpx.AsyncClient(base_url=daemon.base_url, timeout=HTTP_TIMEOUT,
                                 limits=_limits()) as http:

        async def one(i: int) -> httpx.Response:
            return await http.post("/v1/chat/completions", json={
                "model": "ppocr", "messages": ocr_messages(images[i])})

        responses = await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(REQUESTS))), timeout=HTTP_TIMEOUT * 2
        )

    ok = [i for i, r in enumerate(responses) if r.status_code == 200]
    rejected = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(rejected) == REQUESTS, sorted({r.status_code for r in responses})
    assert rejected, "nothing was rejected: the queue is not bounded"
    assert len(ok) >= QUEUE_SIZE + 1, len(ok)
    for i in ok:
        # Each answer is the text of its own image: no mix-ups between concurrent requests.
        text = responses[i].json()["choices"][0]["message"]["content"]
        assert char_accuracy(_text(i), text) >= 0.85, (i, text)
    for response in rejected:
        error = assert_openai_error(response, 429)
        assert error["type"] == "rate_limit_error"
        assert int(response.headers["Retry-After"]) >= 1

    model = daemon.ps()[PPOCR]
    assert (model["in_flight"], model["queued"]) == (0, 0)
    assert model["state"] == "MODEL_STATE_READY"
