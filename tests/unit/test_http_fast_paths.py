"""The request path's fast ways give the answers of the slow ones they replaced.

Each faster way of doing a step is checked against the way it replaced, kept as the reference:

* JSON bodies parsed by orjson, and by ``json`` where orjson says no (``_parsed_exactly``):
  the same value, or the same refusal in the same words;
* base64 by pybase64, and by the standard library where pybase64 says no;
* request bodies encoded by orjson: the same JSON values as httpx's ``json=``;
* server-sent events split on bytes, a read at a time: the same bytes, and the same error
  events, as the line-by-line relay (kept for other charsets: ``_relay_decoded``), except that
  only CR and LF end lines now (the old relay also split at U+2028 and the like, which JSON
  strings may hold raw);
* ``POST /v1/chat/completions`` answered by ``ChatShortcut``: what FastAPI's route answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ocrd.config.settings import Settings
from ocrd.errors import InvalidRequest, ModelNotFound, OcrdError, UpstreamError
from ocrd.http import json_body, proxy
from ocrd.http.errors import install_error_handlers
from ocrd.http.images import strict_b64decode
from ocrd.http.json_body import JsonLimits, parse_json_body
from ocrd.http.openai import chat
from ocrd.http.openai.chat_service import ChatStream
from ocrd.http.request_work import RequestWork

# --- JSON bodies ------------------------------------------------------------------------------


DEFAULTS = JsonLimits()


def parsed(body: bytes, limits: JsonLimits = DEFAULTS, *, quick: bool = True) -> Any:
    """What parse_json_body makes of ``body``: the value, or (kind of refusal, its message)."""
    original = json_body._parsed_quickly
    if not quick:
        json_body._parsed_quickly = lambda body, limits: None  # type: ignore[assignment]
    try:
        return parse_json_body(body, limits)
    except (InvalidRequest, OcrdError) as error:
        return type(error).__name__, error.message, error.param
    finally:
        json_body._parsed_quickly = original


def same_either_way(body: bytes, limits: JsonLimits = DEFAULTS) -> None:
    quick, exact = parsed(body, limits), parsed(body, limits, quick=False)
    assert quick == exact
    # Equal values of other types (1 == 1.0 == True) would pass ==; the types must match too.
    assert json.dumps(quick) == json.dumps(exact)


EDGE_BODIES = [
    b'{"model": "m", "seed": 123456789012345678901234567890}',  # past 64 bits: orjson makes a float
    b'{"model": "m", "x": -9223372036854775809}',
    b'{"model": "m", "x": 18446744073709551615}',  # u64: orjson keeps it an int
    b'{"model": "m", "x": 9.3e18}',  # a float that large is parsed by json as well: same value
    b'{"model": "m", "x": 1e400}',
    b'{"model": "m", "x": -1e400}',
    b'{"model": "m", "x": NaN}',
    b'{"model": "m", "x": Infinity}',
    b'{"model": "m", "x": "\\ud800"}',
    b'{"model": "m", "x": "\\ud83d\\ude00"}',
    b'\xef\xbb\xbf{"model": "m"}',
    '{"model": "m"}'.encode("utf-16"),
    b'{"model": "pp\xff\xfeocr"}',
    b'{"model": "m", "a": 1, "a": 2}',
    b'{"model": "m", "x": -0, "y": -0.0, "z": 1E2, "w": 1.5e-400}',
    b'{"model": "m", "x": ' + b"9" * 5000 + b"}",
    b'[{"model": "m"}]',
    b'"just a string"',
    b"   {}   ",
    b'{"model": "m"} trailing',
    b'{"model": "m",}',
    b'{"model": "m", "x": "tab\tinside"}',
    b'{"x": ' + b"[" * 70 + b"]" * 70 + b"}",  # deeper than 64: refused in json_body's words
    b'{"x": ' + b"[" * 1010 + b"]" * 1010 + b"}",  # past orjson's 1,024? no: past json's recursion
    b'{"x": ' + b"[" * 1100 + b"]" * 1100 + b"}",
    b"[" * 20_000 + b"]" * 20_000,
]


@pytest.mark.parametrize("body", EDGE_BODIES)
def test_a_body_gets_the_same_value_or_the_same_refusal_from_both_parsers(body):
    same_either_way(body)


def test_an_integer_past_64_bits_stays_exact():
    assert parse_json_body(b'{"x": 123456789012345678901234567890}')["x"] == 123456789012345678901234567890


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children,
                                                                     max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from([(False, ": "), (True, ":")]))
def test_generated_bodies_parse_alike(value, style):
    ensure_ascii, separator = style
    body = json.dumps({"v": value}, ensure_ascii=ensure_ascii, separators=(",", separator))
    same_either_way(body.encode("utf-8", "surrogatepass"), JsonLimits(max_depth=8))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
@example(b'{"a": 1e309}')
@example(b'{"a":\x00}')
def test_arbitrary_bytes_parse_alike(body):
    same_either_way(body)


# --- base64 -----------------------------------------------------------------------------------


def stdlib(payload: str) -> bytes | str:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "refused"


def fast(payload: str) -> bytes | str:
    try:
        return strict_b64decode(payload)
    except (binascii.Error, ValueError):
        return "refused"


@pytest.mark.parametrize("payload", ["", "QUJD", "QUI=", "QQ==", "QQ=", "QQ", "AAAA=", "AAAA==",
                                     "AAAA===", "QUJD\n", "QU JD", "QUJD-_", "é", "QQ==QQ==", "=QUJD",
                                     "QR==", "QUJ=", "QUJD" * 10_000])
def test_base64_is_decoded_and_refused_as_the_standard_library_does(payload):
    assert fast(payload) == stdlib(payload)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ABCDQRSabcz0129+/=-_ \n", max_size=40))
def test_generated_base64_is_decoded_and_refused_alike(payload):
    assert fast(payload) == stdlib(payload)


# --- request bodies to runners -----------------------------------------------------------------


def httpx_json(body: Any) -> bytes:
    return httpx.Request("POST", "http://runner", json=body).read()


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "héllo \u2028 \U0001f600 \"q\" \\ \n"}]},
    {"model": "m", "seed": 2**70, "x": -(2**64), "y": [1.5, 1e300, -0.0, 1e-300, 10**20]},
    {"model": "m", "nested": {"a": [None, True, False, {}], "b": ""}},
])
def test_a_forwarded_body_holds_the_values_httpx_would_have_sent(body):
    assert json.loads(proxy.encode_body(body)) == json.loads(httpx_json(body))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_generated_forwarded_bodies_hold_the_same_values(body):
    assert json.loads(proxy.encode_body(body)) == json.loads(httpx_json(body))


# --- server-sent events -----------------------------------------------------------------------


class StubRunner:
    """What the proxy asks of a runner, answering with ``pieces`` (one read each)."""

    model_id = "org/m"

    def describe(self) -> str:
        return "the runner of org/m"

    def failure_hint(self) -> str:
        return "it may have crashed"

    def timeout_note(self) -> str:
        return ""


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def event_stream(pieces: list[bytes], content_type: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": content_type}, stream=Pieces(pieces))


async def relayed(pieces: list[bytes], content_type: str = "text/event-stream", *,
                  reference: bool = False) -> list[bytes]:
    relay = proxy._relay_decoded if reference else proxy.relay_events
    return [piece async for piece in relay(StubRunner(), event_stream(pieces, content_type))]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


CHUNK = b'data: {"choices": [{"delta": {"content": "t\xc3\xa9xt"}}]}'

STREAMS = [
    CHUNK + b"\n\n" + CHUNK + b"\n\ndata: [DONE]\n\n",
    CHUNK + b"\r\n\r\n" + CHUNK + b"\r\rdata: [DONE]\r\n\r\n",
    b"\n\n: keep-alive\n\nevent: x\nid: 1\nretry: 5\n" + CHUNK + b"\n\ndata: [DONE]\n\n",
    CHUNK + b"\n\n",  # ends early
    CHUNK + b"\n\ngarbage\n\ndata: [DONE]\n\n",  # not SSE, after a good event
    CHUNK + b"\n\ndata: [DONE]\n\ngarbage",  # a last line without its end
    CHUNK + b"\n\ndata: [DONE]\n\ndata: x",
    CHUNK + b"\n\ndata: [DONE]\n\r",
    CHUNK + b"\n\ndata: [DONE]",  # DONE never finished
    b"data: \xff\xfe broken utf-8\n\ndata: [DONE]\n\n",
    b"data: [DONE]\n\n" + b"data: after\n\n",
]


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("cuts", [[], [1], [5, 6, 7], list(range(0, 400, 3)), [len(CHUNK) + 1]])
async def test_events_come_out_as_the_line_by_line_relay_made_them(stream, cuts):
    pieces = split(stream, cuts)
    assert b"".join(await relayed(pieces)) == b"".join(await relayed(pieces, reference=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([CHUNK, b"data: [DONE]", b"", b": c", b"event: e", b"junk", b"\xff",
                                 b"data: x\r", b"data: y"]), max_size=8),
       st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=8, max_size=8),
       st.lists(st.integers(0, 600), max_size=6))
def test_generated_streams_come_out_alike(lines, endings, cuts):
    stream = b"".join(line + ending for line, ending in zip(lines, endings, strict=False))
    pieces = split(stream, cuts)

    async def both() -> tuple[bytes, bytes]:
        return b"".join(await relayed(pieces)), b"".join(await relayed(pieces, reference=True))

    new, old = asyncio.run(both())
    assert new == old


async def test_the_events_of_one_read_go_on_as_one_piece():
    pieces = [CHUNK + b"\n\n" + CHUNK + b"\n\n" + CHUNK + b"\n\n", b"data: [DONE]\n\n"]
    out = await relayed(pieces)
    assert out == [(CHUNK + b"\n\n") * 3, b"data: [DONE]\n\n"]


async def test_an_event_that_comes_alone_goes_on_alone():
    out = await relayed([CHUNK + b"\n", b"\n", b"data: [DONE]\n\n"])
    assert out == [CHUNK + b"\n\n", b"data: [DONE]\n\n"]


async def test_a_line_separator_inside_a_json_string_does_not_end_the_line():
    # JSON strings may hold U+2028, U+2029 and U+0085 raw (vLLM's and orjson's output does);
    # only CR and LF end an SSE line. The line-by-line relay split there and answered an error.
    event = 'data: {"choices": [{"delta": {"content": "a\u2028b\u2029c\x85d\x0be"}}]}'.encode()
    out = await relayed([event + b"\n\ndata: [DONE]\n\n"])
    assert b"".join(out) == event + b"\n\ndata: [DONE]\n\n"


async def test_a_bad_line_after_good_events_in_one_read_errors_after_them():
    out = await relayed([CHUNK + b"\n\nnot an event\n\n"])
    assert out[0] == CHUNK + b"\n\n"
    error = json.loads(out[1].removeprefix(b"data: "))["error"]
    assert "not server-sent events" in error["message"] and "'not an event'" in error["message"]
    assert out[2:] == [b"data: [DONE]\n\n"]


async def test_a_stream_in_another_charset_is_decoded_by_it():
    event = 'data: {"content": "é"}'.encode("latin-1")
    out = await relayed([event + b"\n\ndata: [DONE]\n\n"], "text/event-stream; charset=latin-1")
    assert b"".join(out) == 'data: {"content": "é"}\n\ndata: [DONE]\n\n'.encode()


# --- POST /v1/chat/completions with and without ChatShortcut ----------------------------------


class FakeChat:
    """``AppState.chat``: answers by the request's ``user`` field; notes which route function
    FastAPI's router chose (none when the shortcut answered)."""

    def __init__(self) -> None:
        self.endpoints: list[Any] = []

    async def create(self, raw: dict[str, Any], request: Any, is_disconnected: Any) -> Any:
        self.endpoints.append(is_disconnected.__self__.scope.get("endpoint"))
        kind = raw.get("user")
        if kind == "missing":
            raise ModelNotFound("no model named 'nope'")
        if kind == "upstream":
            raise UpstreamError("the runner of org/m closed the connection")
        if kind == "crash":
            raise RuntimeError("secret")
        if kind == "stream":
            async def events() -> AsyncIterator[bytes]:
                yield CHUNK + b"\n\n"
                yield b"data: [DONE]\n\n"

            class Lease:
                async def aclose(self) -> None:
                    pass

            return ChatStream(events(), Lease())  # type: ignore[arg-type]
        if kind == "dict":
            return {"id": "c", "choices": [], "note": "é"}
        raw_bytes = b'{ "id" : "c", "choices" : [], "spacing": "as sent"}'
        return proxy.Completion(json.loads(raw_bytes), raw_bytes)


def chat_app(shortcut: bool) -> FastAPI:
    app = FastAPI()
    app.state.ocrd = SimpleNamespace(settings=Settings(), request_work=RequestWork(), chat=FakeChat())
    if shortcut:
        app.add_middleware(chat.ChatShortcut)
    install_error_handlers(app)
    app.include_router(chat.router)
    return app


REQUESTS = [
    ("POST", {"json": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}),
    ("POST", {"json": {"model": "m", "user": "dict", "messages": [{"role": "user", "content": "hi"}]}}),
    ("POST", {"json": {"model": "m", "user": "stream", "messages": [{"role": "user", "content": "hi"}]}}),
    ("POST", {"json": {"model": "m", "user": "missing", "messages": [{"role": "user", "content": "x"}]}}),
    ("POST", {"json": {"model": "m", "user": "upstream", "messages": [{"role": "user", "content": "x"}]}}),
    ("POST", {"json": {"model": "m", "user": "crash", "messages": [{"role": "user", "content": "x"}]}}),
    ("POST", {"content": b'{"model": "m", "messages": [', "headers": {"content-type": "application/json"}}),
    ("POST", {"json": {"model": "m", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}}),
    ("POST", {"content": b""}),
    ("GET", {}),
    ("PUT", {"json": {}}),
]


@pytest.mark.parametrize(("method", "kwargs"), REQUESTS)
async def test_the_shortcut_answers_as_fastapis_route_does(method, kwargs, caplog):
    answers, logs, endpoints = [], [], []
    for shortcut in (False, True):
        caplog.clear()
        app = chat_app(shortcut)
        with caplog.at_level(logging.WARNING, logger="ocrd.http"):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ocrd") as client:
                response = await client.request(method, "/v1/chat/completions", **kwargs)
        answers.append((response.status_code, sorted(response.headers.items()), response.content))
        logs.append([(r.levelname, r.getMessage().split("\n")[0]) for r in caplog.records])
        endpoints.append(app.state.ocrd.chat.endpoints)
    assert answers[0] == answers[1]
    assert logs[0] == logs[1]
    # Both ways were taken: the router's route function, then the shortcut.
    assert endpoints[0] in ([], [chat.create_chat_completion]) and endpoints[1] in ([], [None])
    assert len(endpoints[0]) == len(endpoints[1])


async def test_a_completion_goes_to_the_client_as_the_runner_sent_it():
    transport = httpx.ASGITransport(chat_app(True))
    async with httpx.AsyncClient(transport=transport, base_url="http://ocrd") as client:
        response = await client.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert response.content == b'{ "id" : "c", "choices" : [], "spacing": "as sent"}'
    assert response.headers["content-type"] == "application/json"


async def test_a_runner_answer_only_python_reads_is_encoded_again():
    # NaN is not JSON: orjson refuses the bytes, json reads them; as before, the object is
    # encoded again (and JSONResponse refuses NaN: a 500), never relayed as it came.
    nan = b'{"id": "c", "choices": [], "x": NaN}'
    runner = StubRunner()
    runner.client = lambda: httpx.AsyncClient(  # type: ignore[attr-defined]
        base_url="http://runner", transport=httpx.MockTransport(lambda request: httpx.Response(
            200, content=nan, headers={"content-type": "application/json"})))
    runner.request_body = lambda body: body  # type: ignore[attr-defined]
    answer = await proxy.complete(runner, {"model": "m"})  # type: ignore[arg-type]
    assert not isinstance(answer, proxy.Completion) and answer["choices"] == []


async def test_a_stream_in_another_charset_is_relayed_as_utf8_from_a_real_connection():
    """Over aiohttp (``AiohttpClient.exchange``, what real runners answer through) a stream whose
    content type names latin-1 is decoded as latin-1 (through httpx's decoder) and sent on as
    UTF-8, as it was when every answer came as an httpx response."""
    from ocrd.runners.transport import AiohttpClient, exchange

    body = b"data: caf\xe9\n\ndata: [DONE]\n\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=latin-1\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AiohttpClient(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30)) as client:
            reply = await exchange(client, "/v1/chat/completions", b"{}", stream=True)
            assert reply.charset_encoding == "latin-1"
            pieces = [piece async for piece in proxy.relay_events(StubRunner(), reply)]  # type: ignore[arg-type]
    finally:
        server.close()
        await server.wait_closed()
    assert b"".join(pieces) == "data: café\n\ndata: [DONE]\n\n".encode()
