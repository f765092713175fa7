"""CPU work a request causes, kept off the event loop: ``RequestWork`` and ``read_request``.

The event loop serves every HTTP request, the control plane's ``/health``-like calls, runner
events and systemd's watchdog pings; a route that parses a 60 MB body on it stops all of them
(the watchdog restarts a daemon that stalls past ``WatchdogSec``). So bodies over
``INLINE_BYTES`` are parsed and validated in a small pool of threads. The pool is bounded: at
most ``WORKERS`` bodies are parsed at once and the others wait their turn, which also bounds the
memory that parsing adds to the bodies already received. Small bodies (nearly all requests) are
parsed inline, where a thread hop would cost more than the parse.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ocrd.http.json_body import JsonLimits, parse_json_body
from ocrd.http.openai.protocol import parse_body_as

if TYPE_CHECKING:
    from starlette.requests import Request

    from ocrd.http.state import AppState

T = TypeVar("T")
Body = TypeVar("Body", bound=BaseModel)

INLINE_BYTES = 64 * 1024
# The parse holds the GIL for most of its time, so more threads would not be faster; two let a
# small body overtake one big one.
WORKERS = 2


class RequestWork:
    def __init__(self, workers: int = WORKERS):
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="ocrd-request")

    async def run(self, function: Callable[..., T], /, *args: Any) -> T:
        """``function(*args)`` in the pool. Cancelled while it waits for a thread (the client
        went away), it never runs."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def read_request(request: Request, model: type[Body]) -> tuple[dict[str, Any], Body]:
    """The request's JSON body, raw and validated as ``model``; 4xx ``OcrdError`` otherwise."""
    state: AppState = request.app.state.ocrd
    body = await request.body()
    limits = JsonLimits.from_settings(state.settings.limits)
    if len(body) <= INLINE_BYTES:
        return _parse(body, limits, model)
    return await state.request_work.run(_parse, body, limits, model)


def _parse(body: bytes, limits: JsonLimits, model: type[Body]) -> tuple[dict[str, Any], Body]:
    raw = parse_json_body(body, limits)
    return raw, parse_body_as(model, raw)
