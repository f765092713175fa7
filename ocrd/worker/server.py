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

Every request a runner serves is a chat completion, and what the runner adds to the model's own
time is time the client waits (``bench/transformers_overhead.py``). So ``POST
/v1/chat/completions`` is answered in front of FastAPI (``ocrd.shortcut``: no routing,
dependency solving or middleware layers), a small request's images are decoded on the event loop
(a thread hop costs more), and the access-log line is written once the response is sent
(``AccessLog``; uvicorn's own, written before it, is off: ``quiet_http_protocol``).
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from ocrd.errors import OcrdError, as_ocrd_error
from ocrd.openai_types import DONE, ChatRequest, sse_event, unless_disconnected
from ocrd.shortcut import PostShortcut
from ocrd.worker.chat_input import chat_input, generation_params, open_chat, parse_request
from ocrd.worker.engines import ChatInput, Engine, Generation

log = logging.getLogger("ocrd.worker.server")
access_log = logging.getLogger("uvicorn.access")  # the name the daemon knows its lines by

CHAT_PATH = "/v1/chat/completions"
# Decoded on the event loop up to these (request bytes; pixels of all its images, about 5 ms of
# decoding), as the daemon does (ocrd.http.images): a thread hop costs more than that.
INLINE_BYTES = 256 * 1024
INLINE_PIXELS = 512 * 512


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


def create_app(engine: Engine) -> ASGIApp:
    """The runner's app, serving the already loaded ``engine``."""
    app = FastAPI(title=f"ocrd runner: {engine.model_id}", docs_url=None, redoc_url=None, openapi_url=None)
    generator = Generator()
    started = int(time.time())

    app.exception_handler(OcrdError)(_ocrd_error)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        return _crash_response(exc)

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

    chat = Chat(engine, generator)

    @app.post(CHAT_PATH)
    async def chat_completions(request: Request) -> Response:
        # Answered by the shortcut below first: this route makes other methods a 405.
        return await chat.answer(request)

    # Answered in front of FastAPI (ocrd.shortcut): what the route above answers, with less work.
    return AccessLog(PostShortcut(app, CHAT_PATH, chat.answer, _ocrd_error))


async def _ocrd_error(_request: Request, exc: OcrdError) -> JSONResponse:
    return JSONResponse(exc.to_openai(), status_code=exc.http_status, headers=exc.http_headers())


def _crash_response(exc: Exception) -> JSONResponse:
    log.error("request failed", exc_info=exc)
    return JSONResponse(as_ocrd_error(exc).to_openai(), status_code=500)


class Chat:
    """What ``POST /v1/chat/completions`` does: parse, decode, generate, answer."""

    def __init__(self, engine: Engine, generator: Generator):
        self.engine = engine
        self.generator = generator

    async def answer(self, request: Request) -> Response:
        """The response to one request; an ``OcrdError`` raised for the caller to answer, any
        other failure answered here with OpenAI's 500 (as the app's handler answers it)."""
        try:
            return await self._answer(request)
        except OcrdError:
            raise
        except Exception as exc:
            return _crash_response(exc)

    async def _answer(self, request: Request) -> Response:
        body = await request.body()
        parsed = parse_request(body)
        chat = await _read_chat(parsed, len(body))
        generation = self.engine.generate(chat, generation_params(parsed))  # input errors: 400 here
        meta = Completion(model=self.engine.model_id)
        if parsed.stream:
            return StreamingResponse(
                _stream(self.generator, generation, meta, parsed.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text = await unless_disconnected(self.generator.text(generation), request.is_disconnected)
        if text is None:  # the client hung up; its generation was stopped
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        return JSONResponse(meta.body(text, generation))


async def _read_chat(request: ChatRequest, size: int) -> ChatInput:
    """The request's texts and decoded images: on the event loop when small, else in a thread
    (image decoding is CPU work)."""
    if size > INLINE_BYTES:
        return await asyncio.to_thread(chat_input, request)
    opened = open_chat(request)  # the headers only: the pixels are what takes time
    if opened.pixels > INLINE_PIXELS:
        return await asyncio.to_thread(opened.decode)
    return opened.decode()


class AccessLog:
    """uvicorn's access-log line for every request, written once the response is sent instead
    of before its status line (what uvicorn does): formatting and writing it is no longer time
    the client waits. A streamed response's line comes when the stream ends."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what uvicorn answers for an app that fails before it responds

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            http_scope: Any = scope  # uvicorn's helpers are typed for its own scope type
            access_log.info('%s - "%s %s HTTP/%s" %d', get_client_addr(http_scope), scope["method"],
                            get_path_with_query_string(http_scope), scope["http_version"], status)


def quiet_http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools) without its own access log, for an app that writes
    its access lines itself (``AccessLog``): uvicorn's ``access_log=False`` would silence the
    logger, not only uvicorn's use of it."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class QuietHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_log = False

    return QuietHttpToolsProtocol
