"""``PostShortcut``: one POST route answered in front of an ASGI app, for the daemon's and the
runners' chat completions alike (``ocrd.http.openai.chat``, ``ocrd.worker.server``).

FastAPI's router matches every route, solves the endpoint's dependencies, opens an exit stack
and wraps the call in two layers of exception handling: for a request that does little else
(a proxied one, or a runner's whose model is quick) that costs more than parsing its JSON. The
shortcut calls the same answering function the route does and answers an ``OcrdError`` with the
same handler; any other method or path goes on to the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ocrd.errors import OcrdError


class PostShortcut:
    def __init__(self, app: ASGIApp, path: str, answer: Callable[[Request], Awaitable[Response]],
                 on_error: Callable[[Request, OcrdError], Awaitable[Response]]):
        self.app = app
        self._path = path
        self._answer = answer
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self._path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self._answer(request)
        except OcrdError as exc:
            response = await self._on_error(request, exc)
        await response(scope, receive, send)
