"""Runners as Docker containers: one ``vllm/vllm-openai`` container per model, through the docker SDK.

``DockerRunner`` creates the container that ``ocrd.runners.vllm.container_spec`` describes (options
documented there), starts it, and waits until vLLM answers ``/health`` and lists the model on
``/v1/models``; meanwhile every log line of the container is a progress event. The server is
reached on a loopback port that Docker chose. Anything that fails on the way (image missing,
Docker without an NVIDIA runtime, port in use, the server exiting or not answering in time)
removes the container and raises ``ModelLoadFailed`` with one line that says why, the last log
lines included. Images are never pulled implicitly.

Once started, a thread blocks in ``container.wait()``; if the container ends without ``stop()``,
the runner reads its last log line, removes it, and calls ``on_exit`` once. ``stop(grace)`` is
``docker stop`` (SIGTERM, then SIGKILL after ``grace``) and ``docker rm``.

``adopt()`` runs when the daemon starts: it goes through the containers this daemon instance left
(labels ``ocrd.managed``, ``ocrd.instance``), keeps those whose ``ocrd.config-hash`` matches what it
would create now and that answer ``/health`` (returned as runners whose ``start()`` attaches
instead of creating), and removes all the others, so a SIGKILLed daemon leaves no orphans.

Every SDK call blocks, so they run in worker threads; HTTP to the server goes through httpx.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ocrd.errors import EngineUnavailable, ModelLoadFailed
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.vllm import docker_host
from ocrd.runners.vllm.container_spec import (
    PORT_KEY,
    ContainerConfig,
    ContainerOptions,
    container_config,
    container_name,
)
from ocrd.runners.vllm.readiness import answers as _answers
from ocrd.runners.vllm.readiness import resolve, server_client, wait_until_ready

log = logging.getLogger("ocrd.runner.docker")

_LOG_TAIL = 10  # log lines quoted when a start fails
_ADOPT_PROBE_TIMEOUT = 5.0
# uvicorn's access lines ('INFO:     172.17.0.1:41234 - "POST /v1/chat/completions HTTP/1.1" 200'):
# they can land after a crash's own message and never explain it.
_ACCESS_LINE = re.compile(r'^INFO:\s+\S+ - "[A-Z]+ \S+ HTTP/[\d.]+" \d{3}')


class DockerRunner(Runner):
    def __init__(self, spec: RunnerSpec, *, docker: Any = None, gpu_probe: Any = None):
        self.spec = spec
        self.options = ContainerOptions.from_spec(spec)
        self._docker = docker  # a docker.DockerClient; None: connect at start
        self._gpu_probe = gpu_probe  # ocrd.planning.gpu.GpuProbe for per-process GPU memory; None: none
        self._container: Any = None
        self._adopted = False
        self._port: int | None = None
        self._pid: int | None = None
        self._gpu_bytes = 0
        self._client: httpx.AsyncClient | None = None
        self._exited: asyncio.Future[int | None] | None = None
        self._loading = False
        self._stopping = False
        self._watch_task: asyncio.Task[None] | None = None
        self._recent: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL)
        self._log = log.getChild(spec.model.id.replace("/", "."))

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The container's first process on the host (its init)."""
        return self._pid if self._container is not None and not self._has_exited() else None

    @property
    def memory_bytes(self) -> int:
        pid = self.pid
        if not pid:
            return 0
        if self.spec.device.startswith("cuda"):
            return self._gpu_bytes  # measured through NVML once ready; vLLM preallocates its share
        return docker_host.cgroup_memory_bytes(pid)

    @property
    def container_id(self) -> str | None:
        return self._container.id if self._container is not None else None

    @property
    def container_name(self) -> str | None:
        return self._container.name if self._container is not None else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        self._loading = True
        try:
            if self._container is None:
                progress(LoadProgress("container", message=f"starting a container of {self.options.image}"))
                await _finish_even_if_cancelled(
                    asyncio.to_thread(self._launch, lambda line: self._post(loop, progress, line)))
            else:
                progress(LoadProgress("container", message=f"adopting container {self._container.name}"))
            self._follow(loop, progress)
            await self._until_ready(progress)
            if self.spec.device.startswith("cuda"):
                self._gpu_bytes = await asyncio.to_thread(self._measure_gpu)
        except BaseException:
            self._stopping = True
            await self._remove_quietly()
            raise
        finally:
            self._loading = False
        self._watch_task = asyncio.create_task(self._watch(on_exit))

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = server_client(self.base_url, self.options.request_timeout)
        return self._client

    async def stop(self, grace: float) -> None:
        self._stopping = True
        container = self._container
        if container is not None and not self._has_exited():
            try:
                await asyncio.to_thread(container.stop, timeout=max(0, math.ceil(grace)))
            except Exception as exc:  # already gone, or the engine hiccuped: removal settles it
                self._log.warning("docker stop failed: %s", docker_host.start_error_line(exc))
        await self._remove_quietly()
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- logs, for `ocrctl logs` ---------------------------------------------------------------

    async def logs(self, tail: int = 100) -> list[str]:
        """The container's last ``tail`` log lines; the last ones kept in memory once it is gone."""
        container = self._container
        if container is not None:
            with contextlib.suppress(Exception):
                return await asyncio.to_thread(docker_host.log_tail, container, tail)
        return list(self._recent)[-tail:]

    async def follow_logs(self, tail: int = 100) -> AsyncIterator[str]:
        """The last ``tail`` lines, then each new one until the container ends."""
        if self._container is None:
            return
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        stream = await asyncio.to_thread(docker_host.follow_log_stream, self._container, tail)
        reader = threading.Thread(target=_read_lines, daemon=True, name=f"logs-{self.model_id}",
                                  args=(stream, lambda line: _call_soon(loop, lines.put_nowait, line)))
        reader.start()
        try:
            while (line := await lines.get()) is not None:
                yield line
        finally:
            stream.close()  # ends the reader thread when the caller stops early

    # --- adoption support ----------------------------------------------------------------------

    def config(self) -> ContainerConfig:
        """What this runner would create now (blocking: looks up the image's id)."""
        from docker.errors import ImageNotFound

        client = self._client_or_raise()
        try:
            image_id = client.images.get(self.options.image).id
        except ImageNotFound:
            image_id = ""
        return container_config(self.spec, self.options, image_id)

    def attach(self, container: Any) -> None:
        """Takes over a running container that a previous daemon started (see ``adopt``)."""
        self._container = container
        self._adopted = True
        self._port = docker_host.published_port(container, PORT_KEY)
        self._pid = int(container.attrs.get("State", {}).get("Pid") or 0) or None

    # --- internals: start-up -------------------------------------------------------------------

    def _client_or_raise(self) -> Any:
        if self._docker is None:
            client = docker_host.docker_client()
            if isinstance(client, str):
                raise EngineUnavailable(client)
            self._docker = client
        return self._docker

    def _launch(self, report: Callable[[str], None]) -> None:
        """Creates and starts the container (blocking); ModelLoadFailed with nothing left behind."""
        from docker.errors import APIError, DockerException

        client = self._client_or_raise()
        image = self.options.image
        if not docker_host.image_present(client, image):
            if not self.options.pull:
                raise ModelLoadFailed(
                    f"{self.model_id}: the image {image} is not on this host and ocrd never pulls "
                    f"implicitly: `ocrctl pull-image {image}`, or set vllm.pull_images = true"
                )
            try:
                docker_host.pull_image(client, image, report)
            except DockerException as exc:
                raise ModelLoadFailed(f"{self.model_id}: pulling {image} failed: {exc}") from None
        config = self.config()
        try:
            self._container = client.containers.create(**config.create_kwargs(container_name(self.model_id)))
        except APIError as exc:
            raise ModelLoadFailed(f"{self.model_id}: {docker_host.start_error_line(exc)}") from None
        self._log.info("created container %s (%s)", self._container.name, config.config_hash)
        try:
            self._container.start()
        except APIError as exc:
            # The container stays "created"; start() removes it, so nothing is left behind.
            raise ModelLoadFailed(
                f"{self.model_id}: {docker_host.start_error_line(exc, self.options.host_port)}"
            ) from None
        self._container.reload()
        self._port = docker_host.published_port(self._container, PORT_KEY)
        self._pid = int(self._container.attrs.get("State", {}).get("Pid") or 0) or None

    def _follow(self, loop: asyncio.AbstractEventLoop, progress: ProgressCallback) -> None:
        """Threads that follow the container: its log lines, and its end."""
        container = self._container
        assert self._exited is not None
        exited = self._exited

        def wait() -> None:
            try:
                code = container.wait().get("StatusCode")
            except Exception:  # removed meanwhile, or the engine went away
                code = None
            _call_soon(loop, resolve, exited, code)

        def lines() -> None:
            stream = docker_host.follow_log_stream(container, 0 if self._adopted else "all")
            _read_lines(stream, post)

        def post(line: str | None) -> None:
            if line is not None:
                self._post(loop, progress, line)

        threading.Thread(target=wait, daemon=True, name=f"wait-{self.model_id}").start()
        threading.Thread(target=lines, daemon=True, name=f"logs-{self.model_id}").start()

    def _post(self, loop: asyncio.AbstractEventLoop, progress: ProgressCallback, line: str) -> None:
        """One log line (from a thread): kept, logged, and a progress event while loading."""

        def deliver() -> None:
            self._recent.append(line)
            self._log.info("%s", line)
            if self._loading:
                progress(LoadProgress("loading", message=line))

        _call_soon(loop, deliver)

    async def _until_ready(self, progress: ProgressCallback) -> None:
        assert self._exited is not None
        timeout = self.options.load_timeout
        if self._port is None:  # gone before Docker could publish its port
            await asyncio.wait([self._exited], timeout=timeout)
            raise ModelLoadFailed(await self._failure(
                f"exited during start-up with code {self._exited.result()}" if self._exited.done()
                else "has no published port"))
        await wait_until_ready(
            self.base_url, self.options.served_model_name or self.model_id, exited=self._exited,
            timeout=timeout, progress=progress, describe=self._failure)

    async def _failure(self, what: str) -> str:
        lines = await self.logs(_LOG_TAIL)
        said = f"; its last log lines: {' | '.join(lines[-_LOG_TAIL:])}" if lines else ""
        return f"{self.model_id}: the vLLM container {what}{said}"

    def _measure_gpu(self) -> int:
        """GPU memory of the container's processes, by NVML's per-process figures (blocking)."""
        if self._gpu_probe is None:
            return 0
        try:
            pids = docker_host.container_pids(self._container)
        except Exception as exc:
            self._log.warning("could not list the container's processes: %s", exc)
            return 0
        return container_gpu_bytes(self._gpu_probe.snapshot(), pids)

    # --- internals: running --------------------------------------------------------------------

    async def _watch(self, on_exit: ExitCallback) -> None:
        assert self._exited is not None
        code = await self._exited
        if self._stopping:
            return
        lines = await self.logs(_LOG_TAIL)
        self._stopping = True
        await self._remove_quietly()  # an exited container is an orphan to be: remove it now
        last = f": {last_words(lines)}" if lines else ""
        self._log.error("container exited unexpectedly with code %s", code)
        on_exit(f"container exited with code {code}{last}")

    def _has_exited(self) -> bool:
        return self._exited is not None and self._exited.done()

    async def _remove_quietly(self) -> None:
        # Taken at once, so a stop() racing the exit watcher removes the container only once.
        container, self._container = self._container, None
        if container is None:
            return
        with contextlib.suppress(Exception):  # its last words, for logs() once it is gone
            lines = await asyncio.to_thread(docker_host.log_tail, container, _LOG_TAIL)
            self._recent = collections.deque(lines, maxlen=_LOG_TAIL)
        try:
            await asyncio.to_thread(container.remove, force=True)
        except Exception as exc:
            # Gone already, or being removed by someone else: either way it will not stay.
            if type(exc).__name__ != "NotFound" and "already in progress" not in str(exc):
                self._log.warning("could not remove container %s: %s", container.name, exc)


# --- adoption ----------------------------------------------------------------------------------


# (model id, the container's labels) -> the spec ocrd would start it from now, or None.
SpecFor = Callable[[str, dict[str, str]], "RunnerSpec | None"]


@dataclass
class Adoption:
    """What ``adopt`` found: runners to keep (call ``start()`` on them) and what it removed."""

    adopted: list[DockerRunner] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # one line per container: name and why


async def adopt(
    spec_for: SpecFor,
    *,
    instance: str,
    docker: Any = None,
    gpu_probe: Any = None,
) -> Adoption:
    """Adopts this daemon instance's healthy containers whose config hash matches what
    ``spec_for(model_id, labels)`` would create now; removes the rest. ``spec_for`` gets the
    container's labels (where it runs: the planner's choice when it started, which a fresh plan
    could not reproduce while the container holds its memory) and returns None for a model that
    should not run any more, or raises saying why it would not run so now."""
    client = docker if docker is not None else docker_host.docker_client()
    if isinstance(client, str):
        raise EngineUnavailable(client)
    result = Adoption()
    containers = await asyncio.to_thread(docker_host.managed_containers, client, instance)
    for container in sorted(containers, key=lambda c: c.attrs.get("Created", "")):
        model_id = container.labels.get(docker_host.MODEL_LABEL, "")
        reason = await _reason_to_remove(container, model_id, spec_for, client, gpu_probe, result)
        if reason is None:
            continue
        with contextlib.suppress(Exception):
            await asyncio.to_thread(container.remove, force=True)
        result.removed.append(f"{container.name} ({model_id}): {reason}")
        log.info("removed container %s (%s): %s", container.name, model_id, reason)
    return result


async def _reason_to_remove(
    container: Any, model_id: str, spec_for: SpecFor,
    client: Any, gpu_probe: Any, result: Adoption,
) -> str | None:
    """Why ``container`` must go, or None after adopting it into ``result``."""
    try:
        spec = spec_for(model_id, dict(container.labels))
        runner = DockerRunner(spec, docker=client, gpu_probe=gpu_probe) if spec is not None else None
    except Exception as exc:  # the model is unknown now, or its options do not build
        log.warning("no runner for %s: %s", model_id, exc)
        return f"ocrd would not run it so now: {exc}"
    if runner is None:
        return "the model is not configured to run any more"
    expected = (await asyncio.to_thread(runner.config)).config_hash
    if container.labels.get(docker_host.CONFIG_HASH_LABEL) != expected:
        return "its configuration differs from the current one"
    if container.status != "running":
        return f"it is {container.status}"
    if any(r.model_id == model_id for r in result.adopted):
        return "another container of the same model was adopted"
    runner.attach(container)
    async with httpx.AsyncClient(base_url=runner.base_url, timeout=_ADOPT_PROBE_TIMEOUT) as probe:
        if runner._port is None or not await _answers(probe, "/health"):
            return "it does not answer /health"
    result.adopted.append(runner)
    log.info("adopted container %s (%s)", container.name, model_id)
    return None


# --- helpers -----------------------------------------------------------------------------------


def last_words(lines: list[str]) -> str:
    """The line that says why a server ended: the last one that is not an access-log line."""
    telling = [line for line in lines if not _ACCESS_LINE.match(line)]
    return (telling or lines)[-1]


def container_gpu_bytes(snapshot: Any, pids: list[int]) -> int:
    """GPU memory that NVML attributes to any of ``pids``, over every device of ``snapshot``."""
    wanted = set(pids)
    return sum(p.used_bytes for device in snapshot.devices for p in device.processes if p.pid in wanted)


def _read_lines(stream: Any, emit: Callable[[str | None], Any]) -> None:
    """Splits a docker log stream (chunks of bytes) into lines; ``None`` once it ends."""
    pending = b""
    try:
        for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                if line := raw.decode(errors="replace").rstrip():
                    emit(line)
    except Exception:  # the container was removed under the stream
        pass
    if line := pending.decode(errors="replace").rstrip():
        emit(line)
    emit(None)


async def _finish_even_if_cancelled(work: Any) -> None:
    """Awaits ``work`` (a thread's), and when cancelled still lets it finish before re-raising:
    a thread that creates a container after its caller gave up would leave an orphan."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
        loop.call_soon_threadsafe(callback, *args)
