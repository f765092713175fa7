"""Readiness of an OpenAI server that ocrd started (vLLM, in a container or as a process).

vLLM accepts connections long before it can answer them: it binds its port, then loads the model.
It is ready once ``/health`` answers 200 *and* ``/v1/models`` lists the name clients will send
(``--served-model-name``). ``wait_until_ready`` polls both in that order until then, and gives up
at once when the server exits (``exited`` resolves) or when the load timeout passes, raising
``ModelLoadFailed`` with the text the runner's ``describe`` makes of what happened (its last log
lines included). Both vLLM runners use it, so they fail the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import LoadProgress, ProgressCallback
from ocrd.runners.transport import AiohttpClient

T = TypeVar("T")

POLL_SECONDS = 0.5  # between readiness probes; an exit ends the wait at once
PROBE_TIMEOUT = 5.0  # one probe; a loading vLLM may accept a connection and not answer yet

# What went wrong ("exited during start-up with code 1") -> the whole one-line error.
Describe = Callable[[str], Awaitable[str]]


def server_client(base_url: str, request_timeout: float) -> httpx.AsyncClient:
    """The client requests are proxied through: one request may take ``request_timeout`` (a long
    generation), but a server that does not take the connection within 10 s is not there."""
    return AiohttpClient(base_url=base_url, timeout=httpx.Timeout(request_timeout, connect=10.0))


async def wait_until_ready(
    base_url: str,
    served_name: str,
    *,
    exited: asyncio.Future[Any],
    timeout: float,
    progress: ProgressCallback,
    describe: Describe,
) -> None:
    """Returns once the server at ``base_url`` answers ``/health`` and lists ``served_name``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    health_ok = False
    async with httpx.AsyncClient(base_url=base_url, timeout=PROBE_TIMEOUT) as probe:
        while True:
            if exited.done():
                raise ModelLoadFailed(await describe(f"exited during start-up with code {exited.result()}"))
            if not health_ok and await answers(probe, "/health"):
                progress(LoadProgress("ready-check", message="/health answers; checking /v1/models"))
                health_ok = True
            if health_ok and await lists_model(probe, served_name):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ModelLoadFailed(await describe(f"did not become ready within {timeout:.0f}s"))
            await asyncio.wait([exited], timeout=min(POLL_SECONDS, remaining))


async def answers(probe: httpx.AsyncClient, path: str) -> bool:
    """Whether ``GET path`` answers 200 (a refused or hung connection is a no)."""
    try:
        return (await probe.get(path)).status_code == 200
    except httpx.HTTPError:
        return False


async def lists_model(probe: httpx.AsyncClient, served_name: str) -> bool:
    """Whether ``/v1/models`` lists ``served_name`` (anything unreadable is a no)."""
    try:
        response = await probe.get("/v1/models")
        ids = [model.get("id") for model in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return served_name in ids


def resolve(future: asyncio.Future[T], value: T) -> None:
    """Sets ``future``'s result unless it is done already (exit watchers may report twice)."""
    if not future.done():
        future.set_result(value)
