"""Fifty concurrent requests against a model whose queue holds eight: every request ends (no hang,
no silent drop), the overflow gets 429 with ``Retry-After`` in OpenAI's error shape, and when it
is over nothing is left in flight or queued.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.daemon import HTTP_TIMEOUT, assert_openai_error, ocr_messages, running_daemon
from tests.support.render import char_accuracy, render_text_image

PPOCR = "builtin/ppocr"
QUEUE_SIZE = 8
REQUESTS = 50


@pytest.fixture(scope="module")
def daemon():
    with running_daemon({"scheduler": {"queue_size": QUEUE_SIZE}}) as running:
        yield running


def _text(i: int) -> str:
    return f"Request {i} of many"


async def test_a_burst_beyond_the_queue_gets_429_with_retry_after_and_the_rest_complete(daemon):
    assert daemon.ocrctl("load", "ppocr").returncode == 0
    images = [render_text_image([_text(i)]) for i in range(REQUESTS)]
    limits = httpx.Limits(max_connections=REQUESTS * 2, max_keepalive_connections=REQUESTS * 2)
    async with httpx.AsyncClient(base_url=daemon.base_url, timeout=HTTP_TIMEOUT,
                                 limits=limits) as http:

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
