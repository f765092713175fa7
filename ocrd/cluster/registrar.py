"""Keeps this node's models registered with the router (``[cluster]``), from READY to shutdown.

A round every ``cluster.interval``, and at once after a reload: what this node serves (every
model ``GET /v1/models`` lists: the scheduler's ``models()``, by id and by each alias, since the
router matches a request's ``model`` as the client wrote it), against what the router lists under
this node's advertised URL; what is missing is added, what this node no longer serves removed.
A router that restarted lists nothing, so the next round registers everything again.

Never a ``POST`` for a URL the router lists: a second ``POST`` of a listed URL adds a second
routing entry for it (that node then gets twice its share; measured on vllm-router 0.1.17). The
first round with a router replaces (``DELETE``, then ``POST``) what it lists of this node already:
a previous run's entries (a node killed and started again), which the router may have marked
unhealthy: it takes them back only after its health checks pass again (two checks, a minute apart
by default), and then its circuit breaker may still refuse them for a while (13 s more, measured
with checks every second); registered afresh, the node gets traffic at once.

Start-up and shutdown never wait for the router: rounds run in a task of their own, every call is
bounded by ``cluster.timeout``, and the withdrawal at shutdown (``stop``) by that same timeout in
all. A router that is down or answers errors costs a log line when that changes, not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ocrd.addresses import is_loopback_host
from ocrd.cluster.router_api import RouterApi, Worker
from ocrd.cluster.urls import PREFIX, default_advertise_url, model_url
from ocrd.config.cluster import ClusterSettings
from ocrd.errors import RouterUnavailable

if TYPE_CHECKING:
    from ocrd.core.slots import SlotInfo

log = logging.getLogger("ocrd.cluster")
READY_POLL = 0.5  # seconds between looks at the start-up loads, until they are done


def servable_names(models: Iterable[SlotInfo]) -> list[str]:
    """Every name a client may send for a model this node serves: ids and aliases, in order."""
    return list(dict.fromkeys(name for info in models for name in (info.id, *info.aliases)))


class Registrar:
    def __init__(self, settings: Callable[[], ClusterSettings], listener_url: Callable[[], str],
                 models: Callable[[], Iterable[SlotInfo]], ready: Callable[[], bool],
                 api: Callable[[str, float], RouterApi] = RouterApi):
        """``settings``: the ``[cluster]`` section now (a reload replaces it); ``listener_url``: the
        HTTP listener as bound; ``models``: what this node serves (``Scheduler.models``);
        ``ready``: whether the start-up loads are done (until then the router would send
        requests that wait for a load while other nodes are ready); ``api``: the router's
        client for a base URL and timeout."""
        self._settings = settings
        self._listener_url = listener_url
        self._models = models
        self._ready = ready
        self._make_api = api
        self._api: RouterApi | None = None
        # URL -> name this node registered with the router now in use (added before each POST
        # is sent, so a POST cut short by the shutdown is withdrawn too).
        self._registered: dict[str, str] = {}
        self._replaced = False  # the first round with this router has replaced its old entries
        self._not_ready_rounds = 0
        self._problem = ""  # the last failure logged: the same one is not logged every round
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ocrd-cluster")

    def wake(self) -> None:
        """A round now (after a reload), not at the end of the interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Ends the rounds and withdraws what this node registered, waiting at most
        ``cluster.timeout`` for the router."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._api is not None:
            timeout = self._settings().timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._withdraw(list(self._registered), "stopping")
            except TimeoutError:
                log.warning("withdrawing this node from the router at %s took over %gs; stopping "
                            "without it (the router's health checks will find the node gone)",
                            self._api.base_url, timeout)
            await self._close_api()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the registration for good
                log.exception("registration round with the router failed")
            # Waiting for the start-up loads: looked at often, so the node is registered soon
            # after they are done, not an interval later.
            wait = READY_POLL if self._not_ready_rounds else self._settings().interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def sync(self) -> None:
        """One round (see the module doc)."""
        cluster = self._settings()
        api = await self._router(cluster)
        if api is None:
            return
        if not self._ready():
            self._not_ready_rounds += 1
            if self._not_ready_rounds == 2:  # not at once: without preloads that takes a moment
                log.info("registering with the router at %s once the models loaded at start are "
                         "loaded", api.base_url)
            return
        self._not_ready_rounds = 0
        advertise = cluster.advertise_url or default_advertise_url(self._listener_url())
        wanted = {model_url(advertise, name): name for name in servable_names(self._models())}
        try:
            listed = await api.workers()
        except RouterUnavailable as exc:
            self._failed(f"{exc.message}; registration retried every {cluster.interval:g}s")
            return
        problems = await self._reconcile(api, advertise, wanted, listed)
        if problems:
            self._failed(_summary(problems))
        elif self._problem:
            log.info("the router at %s answers again", api.base_url)
            self._problem = ""

    async def _reconcile(self, api: RouterApi, advertise: str, wanted: dict[str, str],
                         listed: list[Worker]) -> list[str]:
        """Adds and removes what differs; the failures, as messages."""
        ours = {w.url: w for w in listed if w.url.startswith(advertise + PREFIX)}
        stale = [url for url in {**ours, **self._registered} if url not in wanted]
        # The first round replaces this node's earlier entries (see the module doc); a URL
        # listed for another model than its name is replaced in any round.
        replace = [url for url, w in ours.items() if url in wanted
                   and (not self._replaced or w.model != wanted[url])]
        missing = [url for url in wanted if url not in ours]
        problems = await self._withdraw(stale, "no longer served here")
        problems += await self._withdraw(replace, "")
        lost = [url for url in missing if url in self._registered]
        if lost:
            log.warning("the router at %s no longer lists %d of this node's model names (it "
                        "restarted, or they were removed there); registering them again",
                        api.base_url, len(lost))
        added = []
        for url in replace + missing:
            self._registered[url] = wanted[url]
            try:
                await api.add(url, wanted[url])
            except RouterUnavailable as exc:
                del self._registered[url]
                problems.append(f"{wanted[url]} not registered: {exc.message}")
            else:
                added.append(wanted[url])
        self._replaced = True
        if added:
            log.info("registered with the router at %s, as %s%sNAME: %s", api.base_url, advertise,
                     PREFIX, ", ".join(added))
        return problems

    async def _withdraw(self, urls: list[str], why: str) -> list[str]:
        """Removes ``urls`` from the router (``why``: logged; empty: not logged); the failures."""
        if not urls or self._api is None:
            return []
        api = self._api
        results = await asyncio.gather(*(api.remove(url) for url in urls), return_exceptions=True)
        names, problems = [], []
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, RouterUnavailable):
                problems.append(f"{url} not withdrawn: {result.message}")
                continue
            if isinstance(result, BaseException):
                raise result
            names.append(self._registered.pop(url, url.rsplit(PREFIX, 1)[-1]))
        if names and why:
            log.info("withdrawn from the router at %s (%s): %s", api.base_url, why, ", ".join(names))
        if problems and why == "stopping":
            log.warning("%s", _summary(problems))  # no later round will say it
        return problems

    async def _router(self, cluster: ClusterSettings) -> RouterApi | None:
        """The client for ``cluster.router_url``; a router changed by a reload (or turned off)
        first gets back what this node had registered with it."""
        if self._api is not None and self._api.base_url != cluster.router_url:
            problems = await self._withdraw(list(self._registered), "cluster.router_url changed")
            if problems:
                log.warning("%s", _summary(problems))
            await self._close_api()
        elif self._api is not None and self._api.timeout != cluster.timeout:
            old, self._api = self._api, self._make_api(cluster.router_url, cluster.timeout)
            await old.aclose()
        if self._api is None and cluster.router_url:
            self._api = self._make_api(cluster.router_url, cluster.timeout)
            self._registered, self._replaced, self._problem = {}, False, ""
            self._warn_if_unreachable_address(cluster)
            log.info("registering this node's models with the router at %s every %gs",
                     cluster.router_url, cluster.interval)
        return self._api

    def _warn_if_unreachable_address(self, cluster: ClusterSettings) -> None:
        advertise = cluster.advertise_url or default_advertise_url(self._listener_url())
        node, router = urlsplit(advertise).hostname or "", urlsplit(cluster.router_url).hostname or ""
        if is_loopback_host(node) and not is_loopback_host(router):
            log.warning("this node advertises %s to the router at %s, a loopback address the "
                        "router cannot reach from another machine; set cluster.advertise_url "
                        "(OCRD_CLUSTER__ADVERTISE_URL) to one it can", advertise, cluster.router_url)

    def _failed(self, message: str) -> None:
        if message != self._problem:
            log.warning("%s", message)
            self._problem = message

    async def _close_api(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None


def _summary(problems: list[str]) -> str:
    """One log line for a round's failures, however many names they concern (often the same
    cause for each: a router that went away)."""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
