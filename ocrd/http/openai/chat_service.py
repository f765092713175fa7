"""The chat service: everything ``POST /v1/chat/completions`` does between parsing and answering.

In order: the model and its preset are resolved and checked (404 / 400 before any other work),
the images checked and decoded (``ocrd.http.images``), the model leased (loading it when needed),
the preset rendered for the engine the leased runner really has, and the request forwarded
(``ocrd.http.proxy``). The preset waits for the lease because the engine is the planner's choice
at load time: before it, ocrd can only guess (dots.ocr's vLLM image tokens must never reach a
transformers runner, nor their absence a vLLM one).

The lease is taken before the answer starts, so every error up to the runner's first byte is an
ordinary HTTP status (404, 429, 503, ...). A whole answer releases it when it returns; a stream
(``ChatStream``) holds it until the stream is closed, which the route does when the response ends
(the last event sent, or the client gone).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.catalog.catalog import split_model_preset
from ocrd.config.settings import Settings
from ocrd.core.scheduler import Scheduler
from ocrd.documents.chat_files import file_parts_as_pages, has_file_parts
from ocrd.documents.source import ReadFile
from ocrd.errors import OcrdError
from ocrd.http import proxy
from ocrd.http.images import forward_payload, prepare_images
from ocrd.http.openai.presets import PresetPlan, preset_plan, requested_preset
from ocrd.http.openai.protocol import ChatCompletionRequest
from ocrd.metrics import Metrics
from ocrd.model_ids import check_model_name
from ocrd.openai_types import parse_body_as, unless_disconnected


class ChatStream:
    """A runner's stream, relayed event by event, and the lease it holds until ``aclose``."""

    def __init__(self, events: AsyncGenerator[bytes, None], lease: contextlib.AsyncExitStack):
        self.events = events
        self._lease = lease

    async def aclose(self) -> None:
        """Ends the relay (closing the runner's connection, which stops its generation) and
        returns the lease. Safe to call more than once."""
        try:
            await self.events.aclose()
        finally:
            await self._lease.aclose()


# A whole completion, a stream, or None: the client hung up before the answer was ready.
ChatAnswer = dict[str, Any] | ChatStream | None


class ChatService:
    """One per daemon (``AppState.chat``). ``settings`` is read per request: a reload replaces it."""

    def __init__(self, scheduler: Scheduler, settings: Callable[[], Settings], metrics: Metrics,
                 read_file: ReadFile | None = None):
        self._scheduler = scheduler
        self._settings = settings
        self._metrics = metrics
        self._read_file = read_file  # PDFs sent by file_id (the Files API)

    async def create(
        self,
        raw: dict[str, Any],
        chat: ChatCompletionRequest,
        is_disconnected: Callable[[], Awaitable[bool]],
        *,
        batch: bool = False,
    ) -> ChatAnswer:
        """The answer to ``chat`` (``raw``: the body as sent); errors raised as ``OcrdError``.
        ``is_disconnected`` tells whether the client is still there (a whole answer is abandoned,
        and its generation stopped, when it is not). ``batch``: a batch line, served below live
        requests (``Scheduler.acquire``)."""
        # A malformed name: 400 before any lookup; unknown model or preset: 404/400 before image work.
        check_model_name(chat.model, allow_preset=True)
        entry, suffix = split_model_preset(chat.model, self._scheduler.resolve)
        if has_file_parts(raw):  # PDFs: their pages become image parts (ocrd.documents.chat_files)
            raw = await file_parts_as_pages(raw, entry, self._settings(), self._read_file)
            chat = parse_body_as(ChatCompletionRequest, raw)
        preset = requested_preset(raw, suffix)
        with self._metrics.observe(entry.id):
            plan = preset_plan(raw, entry, preset)
            settings = self._settings()
            images = await prepare_images(chat, settings.limits, settings.http.allow_remote_image_urls)
            body = {**forward_payload(chat, images), "model": entry.id}
            return await self._forward(entry, body, plan, chat.stream, is_disconnected, batch)

    async def _forward(
        self,
        model: CatalogEntry,
        body: dict[str, Any],
        plan: PresetPlan | None,
        stream: bool,
        is_disconnected: Callable[[], Awaitable[bool]],
        batch: bool = False,
    ) -> ChatAnswer:
        lease = contextlib.AsyncExitStack()
        try:
            runner = await lease.enter_async_context(self._scheduler.acquire(model, batch=batch))
            if plan is not None:
                body = plan.apply(body, runner.engine)
            if not stream:
                try:
                    return await unless_disconnected(proxy.complete(runner, body), is_disconnected)
                except OcrdError as exc:
                    # Raised again from the task's result, in a frame that holds the task, which
                    # holds the error: a cycle (error, traceback, frame, task) that would keep the
                    # request, body and all, until the garbage collector's next full pass. Its
                    # traceback (the runner's answer, not a crash) is not worth that.
                    raise exc.with_traceback(None) from None
                finally:
                    await lease.aclose()
            events = proxy.relay_events(runner, await proxy.open_stream(runner, body))
        except BaseException:
            await lease.aclose()
            raise
        return ChatStream(events, lease)
