"""Every HTTP failure is OpenAI's error envelope (ocrd.http.errors) and bodies are capped
(ocrd.http.limits). A real FastAPI app, driven through httpx's ASGI transport and, where the
socket matters (413 before the body is sent, chunked bodies, streaming), through real uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ocrd.config.settings import LimitsSettings
from ocrd.errors import (
    GENERIC_INTERNAL_MESSAGE,
    InsufficientMemory,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    NotImplementedYet,
    OcrdError,
    QueueFull,
    UpstreamError,
    UpstreamTimeout,
)
from ocrd.http.errors import install_error_handlers
from ocrd.http.images import prepare_images
from ocrd.http.json_body import parse_json_body
from ocrd.http.limits import BodySizeLimit
from ocrd.http.openai.protocol import parse_chat_request
from tests.support.openapi import validate

MAX_BODY = 1024
# A safety net so that a broken server fails the test instead of hanging it; never asserted on.
HANG_GUARD_S = 30

RAISED: dict[str, OcrdError] = {
    "invalid": InvalidRequest("temperature is out of range", param="temperature"),
    "not_found": ModelNotFound("no model named 'x'"),
    "queue_full": QueueFull("the queue of 'x' is full", retry_after=7),
    "not_ready": ModelNotReady("'x' is not loaded"),
    "upstream": UpstreamError("the runner of 'x' closed the connection"),
    "timeout": UpstreamTimeout("the runner of 'x' did not answer in 600 s"),
    "memory": InsufficientMemory("'x' needs 14 GiB; 6 GiB free"),
    "later": NotImplementedYet("PullModel comes in a later release"),
}


class Item(BaseModel):
    name: str
    count: int = Field(1, ge=1)


def build_app() -> tuple[FastAPI, asyncio.Event]:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=lambda: MAX_BODY)
    gate = asyncio.Event()

    @app.get("/raise/{name}")
    async def raise_named(name: str):
        raise RAISED[name]

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret detail of the crash")

    @app.get("/grouped")
    async def grouped():
        raise ExceptionGroup("task group", [QueueFull("busy", retry_after=3)])

    @app.get("/teapot")
    async def teapot():
        raise HTTPException(418, "no coffee here")

    @app.post("/items")
    async def create(item: Item):
        return {"name": item.name}

    @app.get("/items/{number}")
    async def read(number: int):
        return {"number": number}

    @app.post("/size")
    async def size(request: Request):
        return {"size": len(await request.body())}

    @app.post("/chat")
    async def chat(request: Request):
        parsed = parse_chat_request(parse_json_body(await request.body()))
        return {"images": len(await prepare_images(parsed, LimitsSettings(), False))}

    @app.get("/stream")
    async def stream():
        async def chunks():
            yield b"first\n"
            await gate.wait()  # released by the test only after it has read "first"
            yield b"second\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/broken-stream")
    async def broken_stream():
        async def chunks():
            yield b"partial\n"
            raise RuntimeError("runner died mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")

    return app, gate


@pytest.fixture
async def client():
    app, _ = build_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ocrd") as c:
        yield c


def envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate("ErrorResponse", body)
    return body["error"]


@pytest.mark.parametrize("name", sorted(RAISED))
async def test_ocrd_errors_keep_their_status_body_and_headers(client, name):
    response = await client.get(f"/raise/{name}")
    error = RAISED[name]
    envelope(response, error.http_status)
    assert response.json() == error.to_openai()
    for header, value in error.http_headers().items():
        assert response.headers[header] == value


async def test_queue_full_is_429_with_retry_after(client):
    response = await client.get("/raise/queue_full")
    assert envelope(response, 429)["type"] == "rate_limit_error"
    assert response.headers["Retry-After"] == "7"


async def test_unknown_exception_is_generic_500_with_traceback_in_the_log(client, caplog):
    with caplog.at_level(logging.ERROR, logger="ocrd.http"):
        response = await client.get("/boom")
    error = envelope(response, 500)
    assert error["message"] == GENERIC_INTERNAL_MESSAGE and error["type"] == "server_error"
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.name == "ocrd.http"]
    assert record.exc_info[0] is RuntimeError
    assert "secret detail of the crash" in caplog.text and "/boom" in record.getMessage()


async def test_ocrd_error_inside_an_exception_group_keeps_its_status(client):
    response = await client.get("/grouped")
    envelope(response, 429)
    assert response.headers["Retry-After"] == "3"


async def test_validation_error_is_400_with_param_from_loc(client):
    error = envelope(await client.post("/items", json={"name": "a", "count": 0}), 400)
    assert error["param"] == "count" and error["type"] == "invalid_request_error"
    assert "greater than or equal to 1" in error["message"]
    assert envelope(await client.post("/items", json={}), 400)["param"] == "name"
    assert envelope(await client.get("/items/abc"), 400)["param"] == "number"


async def test_body_that_is_not_json_is_400(client):
    response = await client.post(
        "/items", content=b"{name: ", headers={"content-type": "application/json"}
    )
    error = envelope(response, 400)
    assert error["message"].startswith("request body is not valid JSON")
    assert error["param"] is None


async def test_missing_body_is_400(client):
    response = await client.post("/items", headers={"content-type": "application/json"})
    assert envelope(response, 400)["message"] == "request body is missing; send a JSON object"


async def test_unknown_route_is_404_envelope(client):
    error = envelope(await client.get("/v1/nowhere"), 404)
    assert error["message"] == "unknown URL: GET /v1/nowhere"


async def test_wrong_method_is_405_envelope_with_allow(client):
    response = await client.delete("/items")
    assert "POST" in response.headers["allow"]
    assert envelope(response, 405)["message"] == "method DELETE is not allowed on /items"


async def test_route_http_exception_keeps_its_detail(client):
    assert envelope(await client.get("/teapot"), 418)["message"] == "no coffee here"


async def test_chat_route_refusals_come_back_with_param(client):
    bad = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/shadow"}}]}]}  # fmt: skip
    error = envelope(await client.post("/chat", json=bad), 400)
    assert error["param"] == "messages.0.content.0.image_url.url"
    assert "file:// URLs are never accepted" in error["message"]
    not_finite = envelope(await client.post("/chat", content=b'{"temperature": NaN}'), 400)
    assert not_finite["param"] == "temperature"


async def test_declared_body_over_limit_is_413(client):
    response = await client.post("/size", content=b"x" * (MAX_BODY + 1))
    error = envelope(response, 413)
    assert "limits.max_body_bytes" in error["message"]


async def test_body_at_the_limit_passes(client):
    response = await client.post("/size", content=b"x" * MAX_BODY)
    assert response.status_code == 200 and response.json() == {"size": MAX_BODY}


async def chunked(total: int, piece: int = 100):
    for start in range(0, total, piece):
        yield b"x" * min(piece, total - start)


async def test_chunked_body_over_limit_is_413(client):
    response = await client.post("/size", content=chunked(MAX_BODY * 3))
    assert "content-length" not in response.request.headers
    envelope(response, 413)


async def test_chunked_body_under_limit_passes(client):
    response = await client.post("/size", content=chunked(MAX_BODY))
    assert response.json() == {"size": MAX_BODY}


async def test_chunked_body_over_limit_replaces_fastapis_own_400(client):
    # FastAPI turns any failed body read into "There was an error parsing the body" (400).
    response = await client.post("/items", content=chunked(MAX_BODY * 2))
    assert "limits.max_body_bytes" in envelope(response, 413)["message"]


# --- over a real socket -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: FastAPI):
    """Real uvicorn on a free loopback port, in this event loop."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # start-up failed: raise its error
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read one response (by its Content-Length); (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD_S)
        status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        body = await asyncio.wait_for(
            reader.readexactly(int(headers["content-length"])), HANG_GUARD_S
        )
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, body


async def test_uvicorn_answers_413_before_the_body_is_sent():
    app, _ = build_app()
    async with serving(app) as port:
        # Headers only: a server that waited for the 1 GB body would never answer.
        status, headers, body = await raw_exchange(
            port,
            b"POST /size HTTP/1.1\r\nHost: ocrd\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n",
        )
    assert status == 413
    validate("ErrorResponse", json.loads(body))


async def test_uvicorn_cuts_off_a_chunked_body_once_over_the_limit():
    app, _ = build_app()
    piece = b"x" * (MAX_BODY + 10)
    async with serving(app) as port:
        # One chunk over the limit, and the body never terminated.
        status, _, body = await raw_exchange(
            port,
            b"POST /size HTTP/1.1\r\nHost: ocrd\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(piece):x}\r\n".encode()
            + piece
            + b"\r\n",
        )
    assert status == 413
    assert "limits.max_body_bytes" in json.loads(body)["error"]["message"]


async def test_streaming_response_is_not_buffered_by_the_middlewares():
    app, gate = build_app()
    async with (
        serving(app) as port,
        httpx.AsyncClient(trust_env=False) as client,
        client.stream("GET", f"http://127.0.0.1:{port}/stream") as response,
    ):
        chunks = response.aiter_text()
        first = await asyncio.wait_for(anext(chunks), HANG_GUARD_S)
        assert first == "first\n"  # arrived while the generator still waits on the gate
        gate.set()
        rest = "".join([c async for c in chunks])
    assert rest == "second\n"


async def test_error_after_a_stream_started_aborts_the_connection():
    app, _ = build_app()
    async with serving(app) as port, httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", f"http://127.0.0.1:{port}/broken-stream") as response:
                async for _ in response.aiter_bytes():
                    pass


async def test_uvicorn_serves_the_500_envelope():
    app, _ = build_app()
    async with serving(app) as port, httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/boom")
    assert envelope(response, 500)["message"] == GENERIC_INTERNAL_MESSAGE


async def test_a_body_past_its_declared_length_reaches_the_app_only_up_to_that_length():
    # BodySizeLimit counts nothing when the length is declared within the limit: the server hands
    # on exactly the declared bytes; what follows them is the next request.
    app, _ = build_app()
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /size HTTP/1.1\r\nHost: ocrd\r\nContent-Length: 10\r\n\r\n0123456789"
                         b"POST /size HTTP/1.1\r\nHost: ocrd\r\nContent-Length: 5\r\n\r\n12345")
            sizes = []
            for _ in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD_S)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                sizes.append(json.loads(await asyncio.wait_for(reader.readexactly(length), HANG_GUARD_S)))
        finally:
            writer.close()
    assert sizes == [{"size": 10}, {"size": 5}]
