"""Streams relayed by a real ``ocrd serve`` from an upstream server: event by event, cancelled when
the client goes away, and never piled up in ocrd when the client reads slowly.

The upstream is a real HTTP server in the test process (``FakeUpstream``) that records what it
observes: the request it got, whether its writes failed because its reader went away, and how
many bytes it managed to write. No test sleeps to hope something happened: each waits (bounded)
on an event the upstream sets, or on the upstream's byte count to stop moving.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.daemon import HTTP_TIMEOUT, running_daemon
from tests.support.fake_upstream import FakeUpstream
from tests.support.openapi import validate

MODEL = "acme/fake-ocr"
MESSAGES = [{"role": "user", "content": "stream me"}]
WAIT = 60.0  # hang guard for the events the upstream sets
FLOOD_BYTES = 192 * 2**20
# What may sit in socket buffers between the upstream and a client that stopped reading (the
# kernel's autotuned loopback buffers, a few MB each on the two connections, and ocrd's 64 KB
# write buffer), with room to spare; far below the stream's size.
BUFFERED_AT_MOST = FLOOD_BYTES // 2


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(MODEL, flood_bytes=FLOOD_BYTES) as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(upstream):
    with running_daemon({"upstreams": [{"model": MODEL, "url": upstream.url}]}) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(upstream):
    upstream.behaviour = "normal"
    upstream.release.clear()
    upstream.disconnected.clear()
    upstream.flood_finished.clear()
    upstream.written = 0
    yield
    upstream.release.set()  # nothing stays waiting on a failed test


def stream_request(daemon, client: httpx.Client):
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    return client.stream("POST", f"{daemon.base_url}/v1/chat/completions", json=body)


def test_a_stream_is_relayed_whole_through_the_openai_client(daemon) -> None:
    with daemon.openai_client() as client:
        chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.to_dict())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"fake-vllm {MODEL} read: stream me"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_each_event_reaches_the_client_before_the_upstream_sends_the_next(daemon, upstream) -> None:
    upstream.behaviour = "gated"  # sends one event, then waits for release
    with httpx.Client(timeout=HTTP_TIMEOUT) as client, stream_request(daemon, client) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        # Had ocrd waited for more of the stream, this read would still be waiting (the upstream
        # sends nothing more until released).
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "first"
        upstream.release.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and '" second"' in rest[0]


def test_a_client_that_goes_away_mid_stream_closes_the_upstream_connection(daemon, upstream) -> None:
    upstream.behaviour = "endless"  # streams until its writes fail
    with httpx.Client(timeout=HTTP_TIMEOUT) as client, stream_request(daemon, client) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
    # The response and its connection are closed here, mid-stream.
    assert upstream.disconnected.wait(WAIT), "the upstream never saw ocrd close the connection"


def written_when_stalled(upstream: FakeUpstream) -> int:
    """The upstream's byte count once it stops growing (its writes block), or once it wrote the
    whole stream. A count that stays still for ten looks 0.2 s apart is a stall: had ocrd kept
    reading into memory, the upstream would have written on to the end."""
    deadline = time.monotonic() + WAIT * 3
    last, still = -1, 0
    while still < 10 and not upstream.flood_finished.is_set() and time.monotonic() < deadline:
        time.sleep(0.2)
        current = upstream.written
        still = still + 1 if current == last else 0
        last = current
    return upstream.written


def test_a_client_that_does_not_read_stalls_the_upstream_instead_of_filling_ocrds_memory(
        daemon, upstream) -> None:
    upstream.behaviour = "flood"  # FLOOD_BYTES of events, as fast as the connection takes them
    with httpx.Client(timeout=HTTP_TIMEOUT) as client, stream_request(daemon, client) as response:
        assert next(response.iter_lines()).startswith("data: ")  # streaming, then not reading
        written = written_when_stalled(upstream)
        assert not upstream.flood_finished.is_set(), "the whole stream left the upstream"
        assert 0 < written < BUFFERED_AT_MOST, written
    assert upstream.disconnected.wait(WAIT)
