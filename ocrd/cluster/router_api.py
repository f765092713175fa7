"""vllm-router's worker API, the three calls ocrd's registration makes (measured on 0.1.17 with
``--enable-igw``):

* ``GET /workers``: ``{"workers": [{"url", "model_id", "is_healthy", ...}], "total", "stats"}``;
* ``POST /workers`` ``{"url", "model_id"}``: 200 at once; the router does not call the worker
  (a URL nobody listens on is listed healthy until its health checks fail);
* ``DELETE /workers/{url}``, the URL percent-encoded as one path segment: 200, or 400 with
  ``"code": "WORKER_NOT_FOUND"`` when the router does not list it.

Every failure (no connection, a timeout, an error status, a body that is not the list above) is
one ``RouterUnavailable`` naming the router and the call; nothing else escapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ocrd.errors import RouterUnavailable

_SHOWN = 200  # characters of an error body repeated in a log line


@dataclass(frozen=True)
class Worker:
    """One entry of the router's list."""

    url: str
    model: str
    healthy: bool


class RouterApi:
    def __init__(self, base_url: str, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url
        self.timeout = timeout
        # trust_env off: an HTTP(S)_PROXY set for the Hub must not carry calls to a router that
        # sits on the cluster's own network.
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False,
                                         transport=transport)

    async def workers(self) -> list[Worker]:
        body = await self._call("GET", "/workers")
        try:
            return [Worker(str(item["url"]), str(item.get("model_id") or ""),
                           bool(item.get("is_healthy", True)))
                    for item in body["workers"]]
        except (KeyError, TypeError) as exc:
            raise RouterUnavailable(
                f"the router at {self.base_url} answered GET /workers without a worker list "
                f"({type(exc).__name__}: {exc}); is it a vllm-router started with --enable-igw?"
            ) from None

    async def add(self, url: str, model: str) -> None:
        await self._call("POST", "/workers", {"url": url, "model_id": model})

    async def remove(self, url: str) -> bool:
        """True when the router removed ``url``; False when it did not list it."""
        try:
            await self._call("DELETE", "/workers/" + quote(url, safe=""), what="DELETE /workers")
        except _NotFound:
            return False
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None = None,
                    what: str = "") -> Any:
        what = what or f"{method} {path}"  # the caller names the worker a DELETE is for
        try:
            response = await self._client.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise RouterUnavailable(
                f"the router at {self.base_url} did not answer {what}: "
                f"{type(exc).__name__}{f': {exc}' if str(exc) else ''}") from None
        text = response.text
        if response.status_code == 400 and method == "DELETE" and "WORKER_NOT_FOUND" in text:
            raise _NotFound(text)
        if not response.is_success:
            raise RouterUnavailable(f"the router at {self.base_url} answered {what} with "
                                    f"{response.status_code}: {text[:_SHOWN]}")
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise RouterUnavailable(f"the router at {self.base_url} answered {what} with a body "
                                    f"that is not JSON: {text[:_SHOWN]!r}") from None


class _NotFound(Exception):
    """The router does not list the worker a DELETE names: no failure for ``remove``, and never
    out of this module."""
