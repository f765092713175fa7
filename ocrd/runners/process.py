"""Runners as subprocesses: ``python -m ocrd.worker`` serving one model on a private Unix socket.

The process itself (its own process group, so that stopping it also ends helpers it started, such
as tesseract; its stderr pumped into the daemon's log and a ``LogBuffer`` for `ocrctl logs`; its
exit noticed at once and reported once; the group ended on stop) is a
``ocrd.runners.lifecycle.ChildProcess``. What is the worker's own stays here: its command line and
socket, and its event protocol: load progress as JSON lines on stdout (``progress`` ... ``ready``
or ``error``). Its per-request access-log lines reach the daemon's journal at debug level only.
The worker sets PR_SET_PDEATHSIG itself, so a SIGKILLed daemon leaves no runner behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
from pathlib import Path

import httpx

from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.lifecycle import ChildProcess, read_lines, rss_bytes
from ocrd.runners.logs import LogBuffer
from ocrd.runners.transport import AiohttpClient
from ocrd.runners.warm_pool import WarmProcess

log = logging.getLogger("ocrd.runner")

STOP_TERM_SECONDS = 0.1  # a stop with no grace still gives the worker a SIGTERM and this long


class ProcessRunner(Runner):
    log_buffer: LogBuffer

    def __init__(
        self,
        spec: RunnerSpec,
        socket_dir: Path,
        *,
        request_timeout: float = 600.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
        warm: WarmProcess | None = None,
    ):
        self.spec = spec
        self._socket = socket_dir / f"{secrets.token_hex(6)}.sock"
        self._socket_dir = socket_dir
        self._request_timeout = request_timeout
        self._python = python or spec.python or sys.executable
        self._env = env
        self.log_buffer = LogBuffer()
        self._client: httpx.AsyncClient | None = None
        self._reported_memory = 0
        self._log = log.getChild(spec.model.id.replace("/", "."))
        self._child = ChildProcess("runner", self._log, self.log_buffer, journal_level=_journal_level)
        # A warm runner (``ocrd.runners.warm_pool``) of this spec's key, to hand the model to.
        self._warm = warm

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def memory_bytes(self) -> int:
        pid = self.pid
        if not pid:
            return 0
        if self.spec.device.startswith("cuda"):
            # What the runner measured on its GPU after loading; RSS would miss the weights.
            return self._reported_memory
        return rss_bytes(pid)

    @property
    def socket_path(self) -> Path:
        return self._socket

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        self._socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The worker compares OCRD_PARENT_PID with its parent at start-up: if we died before it
        # set PR_SET_PDEATHSIG, it exits instead of serving as an orphan.
        if not await self._take_warm(progress):
            env = {**(self._env if self._env is not None else os.environ), **self.spec.env,
                   "OCRD_PARENT_PID": str(os.getpid())}
            await self._child.spawn(self._command(), env, merge_output=False)
        try:
            await self._read_until_ready(progress)
        except BaseException:
            await self._kill()
            raise
        self._child.track(self._drain_events())

        async def report(code: int) -> None:
            # Nobody serves on the socket now, and a worker that was SIGKILLed could not remove
            # it: the scheduler only drops a dead runner, so without this every crash left a file
            # behind. The HTTP client stays open: requests still using it fail on their own and
            # are reported as such.
            _unlink(self._socket)
            on_exit(await self._child.exit_report(f"runner of {self.model_id}", "exited"))

        self._child.watch(report)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = AiohttpClient(uds=str(self._socket), base_url="http://runner",
                                         timeout=httpx.Timeout(self._request_timeout, connect=10.0))
        return self._client

    async def stop(self, grace: float) -> None:
        await self._child.stop(max(grace, STOP_TERM_SECONDS))
        await self._cleanup()

    # --- internals -----------------------------------------------------------------------------

    async def _take_warm(self, progress: ProgressCallback) -> bool:
        """Hands the model to the warm runner, if one was given and is (or becomes) warm; False:
        start cold. From here its process, its log and its events are this runner's."""
        warm, self._warm = self._warm, None
        if warm is None:
            return False
        progress(LoadProgress("starting", message=f"handing {self.model_id} to a warm runner"))
        try:
            if not await warm.wait_warm():
                self._log.warning("the warm runner is of no use (%s); starting cold", warm.failure)
                return False
            warm.child.adopt("runner", self._log, _journal_level)
            await warm.child.send(json.dumps({"argv": self._arguments()}))
        except OSError as exc:  # it ended just now
            self._log.warning("the warm runner is gone (%s); starting cold", exc)
            await warm.child.stop(0)
            return False
        except BaseException:  # the load was given up while it warmed: it must not linger
            await warm.stop()
            raise
        self._child, self.log_buffer = warm.child, warm.log_buffer
        return True

    def _command(self) -> list[str]:
        return [self._python, "-m", "ocrd.worker", *self._arguments()]

    def _arguments(self) -> list[str]:
        return [
            "--model-id", self.spec.model.id,
            "--engine", self.spec.engine,
            "--socket", str(self._socket),
            "--options", json.dumps(self.spec.options),
        ]

    async def _read_until_ready(self, progress: ProgressCallback) -> None:
        async with contextlib.aclosing(read_lines(self._child.events)) as lines:
            async for line in lines:
                message = _parse_event(line)
                if message is None:
                    self._log.info("stdout: %s", line)
                    continue
                event = message.get("event")
                if event == "progress":
                    progress(LoadProgress(stage=str(message.get("stage", "")),
                                          progress=float(message.get("progress", -1.0)),
                                          message=str(message.get("message", ""))))
                elif event == "ready":
                    self._reported_memory = int(message.get("memory_bytes") or 0)
                    return
                elif event == "error":
                    await self._kill()
                    raise ModelLoadFailed(f"{self.spec.model.id}: {message.get('message', 'load failed')}")
        raise ModelLoadFailed(await self._child.exit_report(f"runner of {self.model_id}", "exited while loading"))

    async def _drain_events(self) -> None:
        """After ``ready`` the worker has nothing more to say on stdout; whatever comes is
        logged at debug level (and the pipe never fills)."""
        async for line in read_lines(self._child.events):
            self._log.debug("stdout: %s", line)

    async def _kill(self) -> None:
        await self._child.stop(0)
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        _unlink(self._socket)


def _journal_level(line: str) -> int:
    """A runner's access-log line (one per request) stays in its own log for ``ocrctl logs`` but
    reaches the daemon's journal only at debug level, as the daemon's own access log does;
    everything else the runner says is worth the journal."""
    return logging.DEBUG if _ACCESS_LOGGER in line else logging.INFO


_ACCESS_LOGGER = " uvicorn.access: "  # as the worker's log format names the logger


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _parse_event(line: str) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "event" in message else None
