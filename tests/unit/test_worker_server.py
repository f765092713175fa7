"""The runner's OpenAI server (``ocrd.worker.server``) over a small engine of its own: what a
generation hands to ``emit`` in its thread reaches the client in order, streamed or not, and an
engine failure mid-stream is reported in-band after the pieces that came before it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import httpx

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
