"""Replicas: several runner processes of one model behind one ``Runner``.

Builtin and transformers runners answer one request at a time; one runner per model leaves the
other cores (and GPUs) idle. ``[models.X] replicas`` (default for builtin: one per two cores,
``ocrd.core.engines``) starts that many runners of the model, each planned on its own (on a host
with several GPUs each goes where the planner puts it, which spreads them), and ``ReplicaSet``
stands for them all in the scheduler: its ``client()`` sends each request to the replica with the
fewest requests in flight (ties: in turn), counted from the request until its response is closed
(a stream's end included).

They start together; if one fails to load, the others are stopped and the load fails with its
reason. A replica that ends on its own while serving is dropped from the set (its requests in
flight fail as with any crashed runner; the others keep serving); when the last one ends, the
set reports the exit, and the model goes FAILED as a single runner's would.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner
from ocrd.runners.transport import Reply, RunnerClient, exchange

log = logging.getLogger("ocrd.runner.replicas")


class ReplicaSet(Runner):
    def __init__(self, replicas: Sequence[Runner]):
        assert len(replicas) > 1, "a set is for several replicas"
        self._all = list(replicas)
        self._live = list(replicas)
        self.spec = replicas[0].spec
        self._active = {id(replica): 0 for replica in replicas}
        self._turn = itertools.count()
        self._client: httpx.AsyncClient | None = None

    # --- the set -------------------------------------------------------------------------------

    def replicas(self) -> Sequence[Runner]:
        return tuple(self._live)

    @property
    def pid(self) -> int | None:
        return next((r.pid for r in self._live if r.pid), None)

    @property
    def memory_bytes(self) -> int:
        return sum(replica.memory_bytes for replica in self._live)

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        count = len(self._all)

        def progress_of(number: int) -> ProgressCallback:
            def report(step: LoadProgress) -> None:
                progress(LoadProgress(step.stage, step.progress, f"replica {number}/{count}: "
                                      f"{step.message or step.stage}"))
            return report

        def exit_of(replica: Runner) -> ExitCallback:
            return lambda reason: self._replica_exited(replica, reason, on_exit)

        starts = [asyncio.ensure_future(replica.start(progress_of(number), exit_of(replica)))
                  for number, replica in enumerate(self._all, 1)]
        try:
            await asyncio.gather(*starts)
        except BaseException:
            for start in starts:
                start.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            await self.stop(0)
            raise

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = _LeastBusyClient(self)
        return self._client

    async def stop(self, grace: float) -> None:
        replicas, self._live = self._all, []
        await asyncio.gather(*(replica.stop(grace) for replica in replicas), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- how requests reach it, how its failures read: as its first replica's ------------------

    def request_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._all[0].request_body(body)

    def failure_hint(self) -> str:
        return self._all[0].failure_hint()

    def timeout_note(self) -> str:
        return self._all[0].timeout_note()

    async def logs(self, tail: int = 100) -> list[str]:
        """Every replica's last ``tail`` lines, each marked with its replica's number."""
        lines: list[str] = []
        for number, replica in enumerate(self._all, 1):
            lines += [f"[replica {number}] {line}" for line in await replica.logs(tail)]
        return lines

    async def follow_logs(self, tail: int = 100) -> AsyncIterator[str]:
        """The replicas' lines as they come, each marked with its replica's number."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump(number: int, replica: Runner) -> None:
            try:
                async for line in replica.follow_logs(tail):
                    await queue.put(f"[replica {number}] {line}")
            finally:
                await queue.put(None)

        pumps = [asyncio.ensure_future(pump(n, r)) for n, r in enumerate(self._all, 1)]
        try:
            ended = 0
            while ended < len(pumps):
                line = await queue.get()
                if line is None:
                    ended += 1
                else:
                    yield line
        finally:
            for task in pumps:
                task.cancel()

    # --- internals -----------------------------------------------------------------------------

    def _replica_exited(self, replica: Runner, reason: str, on_exit: ExitCallback) -> None:
        if replica not in self._live:
            return
        self._live.remove(replica)
        if self._live:
            log.warning("%s: a replica ended (%s); %d left", self.model_id, reason, len(self._live))
        else:
            on_exit(reason)

    def pick(self) -> Runner:
        """The live replica with the fewest requests in flight; among equals, the next in turn."""
        if not self._live:
            raise httpx.ConnectError("no replica of this model is running")
        least = min(self._active[id(r)] for r in self._live)
        candidates = [r for r in self._live if self._active[id(r)] == least]
        return candidates[next(self._turn) % len(candidates)]

    def began(self, replica: Runner) -> None:
        self._active[id(replica)] += 1

    def ended(self, replica: Runner) -> None:
        self._active[id(replica)] -= 1


class _LeastBusyClient(RunnerClient):
    """Sends each request through the least busy replica's own client, httpx's requests through
    ``_LeastBusy`` and the proxy's (``exchange``) through the replica's ``exchange``."""

    def __init__(self, replicas: ReplicaSet):
        super().__init__(transport=_LeastBusy(replicas), base_url="http://runner",
                         timeout=None)  # each replica's own client times
        self._replicas = replicas

    async def exchange(self, path: str, body: bytes, *, stream: bool) -> Reply:
        replica = self._replicas.pick()
        self._replicas.began(replica)
        try:
            reply = await exchange(replica.client(), path, body, stream=stream)
        except BaseException:
            self._replicas.ended(replica)
            raise
        if not stream:  # read whole: the replica is done with it
            self._replicas.ended(replica)
            return reply
        return _CountedReply(reply, lambda: self._replicas.ended(replica))


class _CountedReply:
    """A replica's streamed reply; closing it ends the request's count on that replica."""

    def __init__(self, reply: Reply, done: Callable[[], None]):
        self._reply = reply
        self._done = done
        self._closed = False

    @property
    def status_code(self) -> int:
        return self._reply.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._reply.headers

    @property
    def charset_encoding(self) -> str | None:
        return self._reply.charset_encoding

    @property
    def content(self) -> bytes:
        return self._reply.content

    async def aread(self) -> bytes:
        return await self._reply.aread()

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._reply.aiter_bytes()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._reply.aclose()
        finally:
            self._done()


class _LeastBusy(httpx.AsyncBaseTransport):
    """Sends each request through the least busy replica's own client."""

    def __init__(self, replicas: ReplicaSet):
        self._replicas = replicas

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replica = self._replicas.pick()
        self._replicas.began(replica)
        try:
            response = await replica.client().send(request, stream=True)
        except BaseException:
            self._replicas.ended(replica)
            raise
        return httpx.Response(status_code=response.status_code, headers=response.headers,
                              stream=_Counted(response, lambda: self._replicas.ended(replica)),
                              extensions=response.extensions, request=request)


class _Counted(httpx.AsyncByteStream):
    """A replica's response body; closing it ends the request's count on that replica."""

    def __init__(self, response: httpx.Response, done: Any):
        self._response = response
        self._done = done
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            content = self._response.content  # a transport that answered with the body read
        except httpx.ResponseNotRead:
            async for chunk in self._response.aiter_raw():
                yield chunk
        else:
            yield content

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._response.aclose()
        finally:
            self._done()
