"""The OpenAI-compatible HTTP app of a runner process, over any ``Engine``.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (plain and streamed),
``GET /v1/ocrd/info`` (what the engine loaded, e.g. layer classes after quantization).
Nothing here knows about OCR or transformers.

Generation is blocking, so each one runs in one worker thread (``asyncio.to_thread`` around
``Generation.run``) and the event loop stays free for ``/health`` while a long request runs; a
streamed one's pieces come back to the loop as the thread makes them. One request generates at a
time: an asyncio lock queues requests, and a thread lock around every generation guarantees that
a request whose client went away (its coroutine cancelled while its thread still runs) cannot
overlap the next one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ocrd.errors import OcrdError, as_ocrd_error
from ocrd.openai_types import DONE, sse_event, unless_disconnected
from ocrd.worker.chat_input import chat_input, generation_params, parse_request
from ocrd.worker.engines import Engine, Generation

log = logging.getLogger("ocrd.worker.server")


@dataclass(frozen=True)
class Completion:
    """The fields every chunk of one completion shares."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def body(self, text: str, generation: Generation) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": generation.finish_reason}
        return self._envelope("chat.completion", [choice]) | {"usage": usage(generation)}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_event(self._envelope("chat.completion.chunk", [choice]))

    def usage_chunk(self, generation: Generation) -> bytes:
        return sse_event(self._envelope("chat.completion.chunk", []) | {"usage": usage(generation)})

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices}


def usage(generation: Generation) -> dict[str, int]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Generator:
    """Runs generations one at a time, off the event loop."""

    def __init__(self) -> None:
        self._queue = asyncio.Lock()
        self._step_lock = threading.Lock()

    async def text(self, generation: Generation) -> str:
        async with self._queue:
            parts: list[str] = []
            try:
                await asyncio.to_thread(self._run, generation, parts.append)
            except asyncio.CancelledError:
                # The client went away: the thread runs on, so tell the engine to stop.
                generation.cancel()
                raise
            return "".join(parts)

    async def pieces(self, generation: Generation) -> AsyncIterator[str]:
        """The pieces as the engine makes them. The generating thread hands each one straight to
        the event loop (one wake-up per piece, and the engine never waits for this consumer)."""
        async with self._queue:
            loop = asyncio.get_running_loop()
            pieces: asyncio.Queue[str | None] = asyncio.Queue()

            def emit(piece: str) -> None:
                loop.call_soon_threadsafe(pieces.put_nowait, piece)

            producer = asyncio.ensure_future(asyncio.to_thread(self._run, generation, emit))
            # Runs after every piece the thread emitted (the loop runs callbacks in order).
            producer.add_done_callback(lambda _: pieces.put_nowait(None))
            try:
                while (piece := await pieces.get()) is not None:
                    yield piece
                await producer  # the engine's error, if any
            finally:
                # Left early (the client went away; the caller cancels the generation): an error
                # the abandoned thread may still raise is nobody's to report.
                producer.add_done_callback(_retrieve)

    def _run(self, generation: Generation, emit: Callable[[str], None]) -> None:
        # A cancelled request's thread runs on until its engine notices: the next one waits here.
        with self._step_lock:
            generation.run(emit)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "exception was never retrieved" in the log


async def _stream(generator: Generator, generation: Generation, meta: Completion, include_usage: bool):
    # The role chunk goes out before any work: it tells the client the runner has the request.
    yield meta.chunk({"role": "assistant", "content": ""})
    finished = False
    try:
        async for piece in generator.pieces(generation):
            if piece:
                yield meta.chunk({"content": piece})
        finished = True
    except Exception as exc:  # the status line is sent already: report in-band, as OpenAI does
        finished = True
        if not isinstance(exc, OcrdError):
            log.exception("generation failed mid-stream")
        yield sse_event(as_ocrd_error(exc).to_openai())
        yield DONE
        return
    finally:
        # Left early: the client disconnected (Starlette cancels us, or closes this generator).
        # The engine stops generating, so the next request does not wait for a useless completion.
        if not finished:
            generation.cancel()
    yield meta.chunk({}, generation.finish_reason)
    if include_usage:
        yield meta.usage_chunk(generation)
    yield DONE


def create_app(engine: Engine) -> FastAPI:
    """The runner's app, serving the already loaded ``engine``."""
    app = FastAPI(title=f"ocrd runner: {engine.model_id}", docs_url=None, redoc_url=None, openapi_url=None)
    generator = Generator()
    started = int(time.time())

    @app.exception_handler(OcrdError)
    async def ocrd_error(_request: Request, exc: OcrdError) -> JSONResponse:
        return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=exc.http_headers())

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return JSONResponse(as_ocrd_error(exc).to_openai(), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": engine.model_id}

    @app.get("/v1/ocrd/info")
    async def info() -> dict[str, Any]:  # what the engine loaded, for debugging and tests
        return {"model": engine.model_id, **engine.info()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": engine.model_id, "object": "model", "created": started, "owned_by": "ocrd"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        parsed = parse_request(await request.body())
        chat = await asyncio.to_thread(chat_input, parsed)  # image decoding is CPU work
        generation = engine.generate(chat, generation_params(parsed))  # input errors: 400 here
        meta = Completion(model=engine.model_id)
        if parsed.stream:
            return StreamingResponse(
                _stream(generator, generation, meta, parsed.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text = await unless_disconnected(generator.text(generation), request.is_disconnected)
        if text is None:  # the client hung up; its generation was stopped
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        return JSONResponse(meta.body(text, generation))

    return app

