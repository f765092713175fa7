"""The runner's OpenAI server (``ocrd.worker.server``) over a small engine of its own: what a
generation hands to ``emit`` in its thread reaches the client in order, streamed or not, and an
engine failure mid-stream is reported in-band after the pieces that came before it. The chat
route in front of FastAPI answers errors as the app does, decodes small and large images alike,
and every request gets one access line in uvicorn's format."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator

import httpx
from PIL import Image

from ocrd.worker.engines import ChatInput, Engine, Generation, GenerationParams, ProgressFn
from ocrd.worker.server import create_app

PIECES = ["Hello", ", ", "wörld", "\n", "again"]


class ListGeneration(Generation):
    """Emits ``PIECES`` one by one (failing before piece ``fail_at`` when set) from whatever
    thread runs it, and records that thread."""

    def __init__(self, fail_at: int | None, threads: list[str]):
        self.fail_at = fail_at
        self.threads = threads

    def __iter__(self) -> Iterator[str]:
        pieces: list[str] = []
        self.run(pieces.append)
        return iter(pieces)

    def run(self, emit: Callable[[str], None]) -> None:
        self.threads.append(threading.current_thread().name)
        for index, piece in enumerate(PIECES):
            if index == self.fail_at:
                raise RuntimeError("the model fell over")
            emit(piece)
        self.prompt_tokens, self.completion_tokens, self.finish_reason = 3, len(PIECES), "length"


class ListEngine(Engine):
    def __init__(self, fail_at: int | None = None):
        super().__init__("test/list")
        self.fail_at = fail_at
        self.threads: list[str] = []

    def load(self, progress: ProgressFn) -> None:
        pass

    def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
        return ListGeneration(self.fail_at, self.threads)


BODY = {"model": "test/list", "messages": [{"role": "user", "content": "hi"}]}


async def post(engine: Engine, body: dict) -> httpx.Response:
    # raise_app_exceptions=False: Starlette re-raises after sending its 500; the client sees the 500.
    transport = httpx.ASGITransport(create_app(engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
        return await client.post("/v1/chat/completions", json=body)


def events(response: httpx.Response) -> list:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


async def test_streamed_pieces_arrive_in_order_and_join_up_to_the_plain_answer():
    engine = ListEngine()
    plain = (await post(engine, BODY)).json()
    assert plain["choices"][0]["message"]["content"] == "".join(PIECES)
    assert plain["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}

    streamed = events(await post(engine, {**BODY, "stream": True, "stream_options": {"include_usage": True}}))
    role, *contents, finish, usage, done = streamed
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in contents] == PIECES
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["usage"] == plain["usage"]
    assert done == "[DONE]"
    # Generation ran off the event loop's thread, both times.
    assert len(engine.threads) == 2 and threading.main_thread().name not in engine.threads


async def test_a_failure_mid_stream_comes_after_the_pieces_before_it():
    response = await post(ListEngine(fail_at=2), {**BODY, "stream": True})
    assert response.status_code == 200  # the status line went out with the role chunk
    role, first, second, error, done = events(response)
    assert [first["choices"][0]["delta"]["content"], second["choices"][0]["delta"]["content"]] == PIECES[:2]
    assert "error" in error and done == "[DONE]"


async def test_a_failure_of_a_plain_request_is_a_500_with_an_openai_error():
    response = await post(ListEngine(fail_at=2), BODY)
    assert response.status_code == 500
    assert "error" in response.json()


# --- the chat route in front of FastAPI, image decoding, the access log ------------------------


class ImageEngine(ListEngine):
    """Records the sizes of the images each request came with, decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[list[tuple[int, int]]] = []

    def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
        self.sizes.append([(image.size, image.mode) for image in chat.images])
        return super().generate(chat, params)


def image_body(width: int, height: int) -> dict:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "text", "text": "read"}, {"type": "image_url", "image_url": {"url": url}}]
    return {**BODY, "messages": [{"role": "user", "content": content}]}


async def test_small_and_large_images_reach_the_engine_decoded_alike():
    # 32x32 is decoded on the event loop, 1024x768 (more than INLINE_PIXELS) in a thread.
    engine = ImageEngine()
    for width, height in ((32, 32), (1024, 768)):
        assert (await post(engine, image_body(width, height))).status_code == 200
    assert engine.sizes == [[((32, 32), "RGB")], [((1024, 768), "RGB")]]


async def test_errors_of_the_chat_route_are_openai_errors_with_their_status():
    bad_json = await post_raw(ListEngine(), b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    corrupt = image_body(8, 8)
    corrupt["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64,AAAA"
    response = await post(ImageEngine(), corrupt)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content.1.image_url.url"


async def test_an_engine_that_fails_before_generating_is_a_500_with_an_openai_error():
    class Broken(ListEngine):
        def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
            raise RuntimeError("the model fell over")

    response = await post(Broken(), BODY)
    assert response.status_code == 500 and "error" in response.json()


async def test_other_methods_on_the_chat_path_are_still_refused_by_fastapi():
    transport = httpx.ASGITransport(create_app(ListEngine()), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
        assert (await client.get("/v1/chat/completions")).status_code == 405
        assert (await client.get("/health")).json()["status"] == "ok"


async def test_every_request_gets_one_access_line_in_uvicorns_format(caplog):
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    transport = httpx.ASGITransport(create_app(ListEngine()), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
        await client.post("/v1/chat/completions", json=BODY)
        await client.post("/v1/chat/completions", content=b"{not json")
        await client.get("/health?probe=1")
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert [line.split(" - ", 1)[1] for line in lines] == [
        '"POST /v1/chat/completions HTTP/1.1" 200',
        '"POST /v1/chat/completions HTTP/1.1" 400',
        '"GET /health?probe=1 HTTP/1.1" 200',
    ]


async def post_raw(engine: Engine, content: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(create_app(engine), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
        return await client.post("/v1/chat/completions", content=content)
