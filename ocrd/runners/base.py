"""What the scheduler needs from a runner, whatever runs the model (subprocess or container).

A runner serves one model over the OpenAI protocol on a private endpoint. The scheduler starts
it, leases it to requests (which talk to it through ``client()``), and stops it. A runner that
ends on its own calls the ``on_exit`` callback it was given, once, with a one-line reason.

Its log lines are for `ocrctl logs`: ``logs(tail)`` and ``follow_logs(tail)``. A runner that
keeps them in a ``LogBuffer`` (``ocrd.runners.logs``; process runners) sets ``log_buffer`` and
gets both from here; a container runner reads them from Docker instead.

What the proxy (``ocrd.http.proxy``) forwards and how its errors name the runner are the runner's
to say too: ``request_body``, ``describe``, ``failure_hint``, ``timeout_note`` and
``unreachable``. Their defaults are for a runner ocrd manages; ``UpstreamRunner`` overrides them.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ocrd.catalog import CatalogEntry
from ocrd.errors import OcrdError, RunnerUnreachable
from ocrd.runners.logs import LogBuffer


@dataclass(frozen=True)
class LoadProgress:
    """One step of a load, as a runner reports it."""

    stage: str
    progress: float = -1.0  # fraction in [0, 1]; negative when unknown
    message: str = ""


ProgressCallback = Callable[[LoadProgress], None]
ExitCallback = Callable[[str], None]


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a runner needs to start: the model, the engine and its options."""

    model: CatalogEntry
    engine: str
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    # Interpreter for a process runner (a venv with the engine's packages); None: ocrd's own.
    python: str | None = None
    # Extra environment for the runner (e.g. HF_HUB_CACHE, HF_HUB_OFFLINE).
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WarmRunnerInfo:
    """A warm runner (``ocrd.runners.warm_pool``) as `ocrctl ps` and the planner see it."""

    engine: str
    device: str  # the device it was warmed for ("cpu", "cuda:N")
    pid: int
    memory_bytes: int  # its resident memory now (on a GPU, NVML adds its CUDA context)
    ready: bool  # warm; False while still importing


class Runner(abc.ABC):
    """One model served by one process (or container)."""

    spec: RunnerSpec
    # The runner's recent log lines; None for a runner that keeps none (it shows no logs).
    log_buffer: LogBuffer | None = None

    @property
    def model_id(self) -> str:
        return self.spec.model.id

    def replicas(self) -> Sequence[Runner]:
        """The runner processes behind it: itself, or a ``ReplicaSet``'s live replicas."""
        return (self,)

    @property
    def engine(self) -> str:
        """The engine that really serves the model (the planner's choice when it loaded), which
        decides e.g. the prompt wrapping a preset gets."""
        return self.spec.engine

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """Process id, for accounting and `ocrctl ps`; None when not running."""

    @property
    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Memory the runner holds, as last measured (0 when unknown)."""

    @abc.abstractmethod
    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        """Starts the runner and returns once it answers requests.

        Raises ``ModelLoadFailed`` (with the runner's own reason) when it cannot load; nothing is
        left running then. ``on_exit`` is called once if the runner ends after a successful start
        without ``stop()`` having been called.
        """

    @abc.abstractmethod
    def client(self) -> httpx.AsyncClient:
        """An HTTP client whose base URL is the runner's OpenAI endpoint."""

    @abc.abstractmethod
    async def stop(self, grace: float) -> None:
        """Stops the runner: asks politely, waits up to ``grace`` seconds, then kills it."""

    # --- how requests reach it, and how its failures read --------------------------------------

    def request_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat request as this runner gets it: unchanged (ocrd's runners understand ocrd's
        ``ocrd`` field and know their model by its id)."""
        return body

    def describe(self) -> str:
        """Who failed, for error messages: "the runner of MODEL"."""
        return f"the runner of {self.model_id}"

    def failure_hint(self) -> str:
        """Why a request may have broken off, and where to look."""
        return "it may have crashed; see `ocrctl ps`"

    def timeout_note(self) -> str:
        """Said after "did not answer in time": the limit, where it is the runner's own."""
        return ""

    def unreachable(self, exc: httpx.ConnectError) -> OcrdError:
        """The error for a request that could not connect to the runner (503)."""
        return RunnerUnreachable(f"{self.describe()} is not reachable (it may have just exited)")

    async def logs(self, tail: int = 100) -> list[str]:
        """The runner's last ``tail`` log lines, oldest first (also after it ended)."""
        return self.log_buffer.tail(tail) if self.log_buffer is not None else []

    async def follow_logs(self, tail: int = 100) -> AsyncIterator[str]:
        """The last ``tail`` lines, then each new one until the runner ends."""
        if self.log_buffer is None:
            return
        async for line in self.log_buffer.follow(tail):
            yield line


RunnerFactory = Callable[[RunnerSpec], Runner]
