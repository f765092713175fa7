"""Runners as subprocesses: ``python -m ocrd.worker`` serving one model on a private Unix socket.

The worker reports load progress as JSON lines on stdout (``progress`` ... ``ready`` or
``error``) and logs on stderr, which we forward to the daemon's log and keep the last lines of
in a ``LogBuffer`` (for `ocrctl logs`, and so that a runner that dies can say why). Each runner
leads its own process group, so stopping it also ends helpers it started (tesseract); the worker
sets PR_SET_PDEATHSIG itself, so a SIGKILLed daemon leaves no runner behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import httpx

from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.logs import LogBuffer

log = logging.getLogger("ocrd.runner")


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
    ):
        self.spec = spec
        self._socket = socket_dir / f"{secrets.token_hex(6)}.sock"
        self._socket_dir = socket_dir
        self._request_timeout = request_timeout
        self._python = python or spec.python or sys.executable
        self._env = env
        self._process: asyncio.subprocess.Process | None = None
        self.log_buffer = LogBuffer()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self._reported_memory = 0
        self._log = log.getChild(spec.model.id.replace("/", "."))

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def memory_bytes(self) -> int:
        if not self.pid:
            return 0
        if self.spec.device.startswith("cuda"):
            # What the runner measured on its GPU after loading; RSS would miss the weights.
            return self._reported_memory
        return rss_bytes(self.pid)

    @property
    def socket_path(self) -> Path:
        return self._socket

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        self._socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            *self._command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            # The worker compares this with its parent at start-up: if we died before it set
            # PR_SET_PDEATHSIG, it exits instead of serving as an orphan.
            env={**(self._env if self._env is not None else os.environ), **self.spec.env,
                 "OCRD_PARENT_PID": str(os.getpid())},
        )
        self._tasks.append(asyncio.create_task(self._pump_stderr()))
        try:
            await self._read_until_ready(progress)
        except BaseException:
            await self._kill()
            raise
        self._tasks.append(asyncio.create_task(self._drain_stdout()))
        self._tasks.append(asyncio.create_task(self._watch(on_exit)))

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self._socket)),
                base_url="http://runner",
                timeout=httpx.Timeout(self._request_timeout, connect=10.0),
            )
        return self._client

    async def stop(self, grace: float) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=max(grace, 0.1))
            except TimeoutError:
                self._log.warning("runner did not stop within %.0fs; killing it", grace)
                await self._kill()
        await self._cleanup()

    # --- internals -----------------------------------------------------------------------------

    def _command(self) -> list[str]:
        return [
            self._python, "-m", "ocrd.worker",
            "--model-id", self.spec.model.id,
            "--engine", self.spec.engine,
            "--socket", str(self._socket),
            "--options", json.dumps(self.spec.options),
        ]

    async def _read_until_ready(self, progress: ProgressCallback) -> None:
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise ModelLoadFailed(await self._exit_description("exited while loading"))
            message = _parse_event(line)
            if message is None:
                self._log.info("stdout: %s", line.decode(errors="replace").rstrip())
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

    async def _exit_description(self, what: str) -> str:
        assert self._process is not None
        code = await self._process.wait()
        with contextlib.suppress(TimeoutError):
            # Let the stderr pump catch up with the runner's last words.
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), timeout=1.0)
        reason = describe_returncode(code)
        last = self.log_buffer.tail(1)
        tail = f": {last[0]}" if last else ""
        return f"runner of {self.spec.model.id} {what} ({reason}){tail}"

    async def _watch(self, on_exit: ExitCallback) -> None:
        assert self._process is not None
        code = await self._process.wait()
        if self._stopping:
            return
        self._log.error("runner exited unexpectedly (%s)", describe_returncode(code))
        # Nobody serves on the socket now, and a worker that was SIGKILLed could not remove it:
        # the scheduler only drops a dead runner, so without this every crash left a file behind.
        _unlink(self._socket)
        on_exit(await self._exit_description("exited"))
        # The HTTP client stays open: requests still using it fail on their own and are reported
        # as such.

    async def _pump_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        try:
            async for raw in self._process.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.log_buffer.append(line)
                    self._log.log(_journal_level(line), "%s", line)
        finally:
            # The runner's stderr ended (or we stopped reading it): `ocrctl logs -f` ends too.
            self.log_buffer.close()

    async def _drain_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            self._log.debug("stdout: %s", raw.decode(errors="replace").rstrip())

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    async def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        self._stopping = True
        if process.returncode is None:
            self._signal_group(signal.SIGKILL)
        await process.wait()
        await self._cleanup()

    async def _cleanup(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
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


def _parse_event(line: bytes) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "event" in message else None


def describe_returncode(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process from /proc (Linux); 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
