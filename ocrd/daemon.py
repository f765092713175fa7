"""Wiring: builds the core, runs HTTP (uvicorn) and gRPC (grpc.aio) in one event loop.

Start-up order: scheduler, the HTTP socket bound, vLLM containers of a previous run adopted or
removed (``ocrd.runners.vllm.adoption``), the control socket bound, then READY=1.
After READY, with ``[cluster] router_url``, the node's models are registered with the router
(``ocrd.cluster``). Shutdown (SIGTERM/SIGINT): STOPPING=1, the node withdrawn from the router
(while the requests drain), /health and gRPC health turn to not-serving, the HTTP
server stops accepting and drains in-flight requests (bounded by scheduler.drain_timeout), the
control plane stops, every runner is stopped, exit 0. SIGHUP re-reads the configuration file:
every setting applies from then on (those a runner starts with: to the models loaded after it),
except the addresses and files bound at start (``RESTART_ONLY``), which keep their running values
with a warning until a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from ocrd import __version__
from ocrd.cache.pull import Puller
from ocrd.catalog import Catalog
from ocrd.cluster.registrar import Registrar
from ocrd.config.loading import load_settings
from ocrd.config.settings import Settings
from ocrd.control.server import ControlServer, start_control_server
from ocrd.control.service import ControlServicer, DaemonInfo, JobServices
from ocrd.core.directory import ModelDirectory
from ocrd.core.engines import runner_factory
from ocrd.core.pins import read_pins, save_pins
from ocrd.core.scheduler import Scheduler
from ocrd.errors import ConfigError, OcrdError
from ocrd.events import Event, EventBus, ModelState
from ocrd.http.app import build_app
from ocrd.http.connections import (
    BACKLOG,
    ConnectionGuard,
    connection_cap,
    guarded_protocol,
    listening_socket,
    log_accept_errors,
    raise_open_file_limit,
)
from ocrd.http.state import AppState
from ocrd.jobs.batch_runner import BatchRunner
from ocrd.jobs.batches import BatchService
from ocrd.jobs.files import FileService
from ocrd.jobs.line_runner import line_runner
from ocrd.jobs.store import JobStore
from ocrd.log_throttle import ThrottledLog
from ocrd.metrics import Metrics
from ocrd.planning.availability import DockerStatusCache
from ocrd.planning.gpu import GpuProbe
from ocrd.planning.planner import allowed_gpus
from ocrd.private_dirs import RUNNERS_SUBDIR, prepare_socket_dirs, prepare_state_dir
from ocrd.runners import sockets as runner_sockets
from ocrd.runners.base import Runner, RunnerSpec
from ocrd.runners.process import ProcessRunner
from ocrd.runners.upstream import UpstreamRunner
from ocrd.runners.vllm.adoption import VllmContainers
from ocrd.runners.warm_pool import WarmKey, WarmPool
from ocrd.systemd import SYSTEMD_VARIABLES, Notifier, run_watchdog, watchdog_interval

log = logging.getLogger("ocrd")
EXPIRY_INTERVAL = 60.0  # seconds between sweeps of expired uploads

# Settings bound at start: sockets, listeners and TLS files; the runtime directory and the vLLM
# instance named after it (containers are adopted by it at start); the state directory (checked
# at start); the tesseract command the catalog checked. A reload warns about a change and keeps
# the running value until a restart.
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "": ("runtime_dir", "state_dir"),
    "http": ("host", "port"),
    "grpc": ("socket", "socket_mode", "socket_group", "listen", "tls_cert", "tls_key",
             "tls_client_ca"),
    "builtin": ("tesseract_cmd",),
    "vllm": ("instance",),
}


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    def __init__(self, settings: Settings, *, config_arg: str | None = None,
                 overrides: dict[str, Any] | None = None):
        self.settings = settings
        self._config_arg = config_arg
        self._overrides = overrides or {}
        self.notifier = Notifier()
        self.events = EventBus()
        self.catalog = Catalog.load_default({"tesseract": settings.builtin.tesseract_cmd})
        self.docker = DockerStatusCache()  # one Docker status for the planner, cached
        self.models = ModelDirectory(self.catalog, settings, docker_status=self.docker.get)
        self.gpu = GpuProbe()  # one NVML view for the planner and GetGpu
        self.downloads = Puller()  # `ocrctl pull`: one download per repository
        # The folder serve() checked at start: a runtime_dir changed by SIGHUP applies only after
        # a restart, and runner sockets must never go into an unchecked one.
        self._runner_dir = settings.runtime_dir / RUNNERS_SUBDIR
        # Runners started ahead, engine imported, for the next load (scheduler.warm_runners).
        self.warm = WarmPool(str(self._runner_dir), self._runner_environment,
                             lambda: self.settings.scheduler.warm_runners)
        # The runner builders of the engine table's kinds (ocrd.core.engines).
        make_runner = runner_factory({"process": self._process_runner, "vllm": self._vllm_runner,
                                      "upstream": UpstreamRunner})
        self.scheduler = Scheduler(settings, self.models, make_runner, self.events,
                                   gpu_probe=self.gpu, warm_runners=self.warm.infos)
        # Models pinned by a load are loaded again after a restart (state_dir/pinned.json).
        self.scheduler.on_pins = lambda pins: save_pins(settings.state_dir, pins)
        self.containers = VllmContainers(settings, self.models, self.gpu)
        self.info = DaemonInfo(
            version=__version__,
            config_path=str(settings.config_path or ""),
            default_model=settings.default_model,
        )
        self.metrics = Metrics(self.scheduler.models)
        self.events.add_listener(self.metrics.on_event)
        # Files and batches, in state_dir (opened in run(), before anything is served).
        self.jobs = JobStore(settings.state_dir)
        self.files = FileService(self.jobs)
        self.batches = BatchService(self.jobs, self.files, changed=lambda: self.batch_runner.wake())
        self.files.in_use = self.batches.files_in_use
        self.app_state = AppState(settings=settings, scheduler=self.scheduler, version=__version__,
                                  metrics=self.metrics, files=self.files, batches=self.batches)
        self.batch_runner = BatchRunner(self.batches, self.files,
                                        line_runner(self.app_state.chat, self.app_state.documents),
                                        lambda: self.settings.batches.concurrency, ran=self._batch_line_ran)
        self.metrics.watch_batch_queue(self._batch_queue)
        # [cluster] router_url: this node's models kept registered with the router (ocrd.cluster).
        self.cluster = Registrar(lambda: self.settings.cluster, lambda: self.info.http_url,
                                 self.scheduler.models, lambda: self.app_state.loaded_at_start)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._control: ControlServer | None = None  # once bound; SIGHUP gives it new tokens
        self._http: _HttpServer | None = None  # once built; SIGHUP gives it a new drain timeout

    def _process_runner(self, spec: RunnerSpec) -> Runner:
        return ProcessRunner(
            spec,
            self._runner_dir,
            request_timeout=self.settings.http.request_timeout,
            env=self._runner_environment(),
            warm=self.warm.take(spec),
        )

    @staticmethod
    def _runner_environment() -> dict[str, str]:
        """What a runner process inherits: the daemon's environment without systemd's."""
        return {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}

    async def _prime_warm_runners(self) -> None:
        """After READY: a warm runner per engine for the load most likely next: builtin on the
        CPU; transformers, where it is available, on the GPU with the most free memory (the
        planner's first choice for a model that fits), else on the CPU."""
        keys = [WarmKey("builtin", sys.executable, "cpu", ())]
        if (await asyncio.to_thread(self.models.availability, "transformers")).available:
            snapshot = await self.gpu.snapshot_async()
            gpus, _ = allowed_gpus(snapshot, self.settings.gpu.devices)
            best = max(gpus, key=lambda gpu: gpu.free, default=None)
            env = self.models.transformers_environment(best.uuid if best else "")
            keys.append(WarmKey("transformers", self.models.transformers_python(),
                                best.device if best else "cpu", tuple(sorted(env.items()))))
        self.warm.prime(keys)

    def _vllm_runner(self, spec: RunnerSpec) -> Runner:
        if spec.options.get("launcher") == "process":
            # Imported only when used: the module of the pip-installed vLLM's launcher.
            from ocrd.runners.vllm.process import VllmProcessRunner

            return VllmProcessRunner(spec, gpu_probe=self.gpu)
        return self.containers.runner(spec)

    async def _take_over_containers(self) -> None:
        """Before READY: Docker's status for the planner (asked off the event loop, so the
        planner's cached answer is there), then the containers a previous run left."""
        if self.settings.vllm.launcher == "docker":
            await asyncio.to_thread(self.docker.refresh)
        await self.containers.adopt_containers(self.scheduler)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        log_accept_errors(loop)
        # Sockets that runners of an earlier run could not remove (SIGKILLed with their daemon).
        await asyncio.to_thread(runner_sockets.sweep, self._runner_dir)
        await asyncio.to_thread(self._open_jobs)
        self.scheduler.start()
        http_socket = _bind_http(self.settings)
        # Bound but not served yet: no request can start a container while adoption runs.
        await self._take_over_containers()
        host, port = http_socket.getsockname()[:2]
        self.info.http_url = f"http://{_url_host(host)}:{port}"
        guard = ConnectionGuard(lambda: self.settings.http,
                                lambda reason: self.metrics.connections_dropped.labels(reason).inc())
        http = _HttpServer(uvicorn.Config(
            build_app(self.app_state), log_config=None, access_log=self.settings.log_level == "debug",
            timeout_graceful_shutdown=_graceful_shutdown(self.settings),
            lifespan="off", http=guarded_protocol(guard), backlog=BACKLOG,
        ))
        self._http = http
        jobs = JobServices(self.files, self.batches, lambda: self.settings.limits.max_file_bytes)
        servicer = ControlServicer(self.scheduler, self.info, gpu=self.gpu, runner_dir=self._runner_dir,
                                   downloads=self.downloads, jobs=jobs)
        control = await start_control_server(self.settings, servicer)
        self.info.grpc_addresses = list(control.addresses)
        self._control = control
        http_task = asyncio.create_task(http.serve(sockets=[http_socket]), name="ocrd-http")
        self._tasks.append(http_task)
        while not http.started:
            if http_task.done():
                await http_task
                raise ConfigError(f"the HTTP server could not start on {self.info.http_url}")
            await asyncio.sleep(0.01)
        self._announce_ready()
        self.cluster.start()
        self._tasks.append(asyncio.create_task(self._prime_warm_runners(), name="ocrd-warm"))
        self._tasks.append(asyncio.create_task(self._expire_files(), name="ocrd-expiry"))
        self._tasks.append(asyncio.create_task(self.batch_runner.run(), name="ocrd-batches"))
        self._tasks.append(asyncio.create_task(self._load_committed(), name="ocrd-preload"))
        await self._stop.wait()
        await self._shutdown(http, http_task, control)
        return 0

    async def _load_committed(self) -> None:
        """After READY (and after a reload): the models pinned before the restart, loaded again
        with their wishes, then those preloaded by the configuration, one by one; then
        ``/health/ready`` may answer 200."""
        first = not self.app_state.loaded_at_start
        restored = await asyncio.to_thread(read_pins, self.settings.state_dir) if first else []
        for model, wish in restored:
            await self._load_at_start(model, "pinned model", "loaded again", keep_alive=wish.keep_alive,
                                      pin=True, engine=wish.engine, quantization=wish.quantization)
        for name, per_model in self.settings.models.items():
            if not per_model.preload:
                continue
            try:
                state = self.scheduler.info(name).state
            except OcrdError as exc:
                log.warning("preloaded model %s not loaded: %s", name, exc.message)
                continue
            if state not in (ModelState.READY, ModelState.LOADING):
                await self._load_at_start(name, "preloaded model", "loaded")
        self.app_state.loaded_at_start = True

    async def _load_at_start(self, model: str, what: str, done: str, **wishes: Any) -> None:
        try:
            info = await self.scheduler.load(model, **wishes)
        except OcrdError as exc:
            log.warning("%s %s not %s: %s", what, model, done, exc.message)
        else:
            log.info("%s %s %s", what, info.id, done)

    def _batch_line_ran(self, model: str, status: int) -> None:
        self.metrics.batch_lines.labels(self._metric_model(model), "completed" if status < 400 else "failed").inc()

    def _batch_queue(self) -> dict[str, int]:
        queued: dict[str, int] = {}
        for model, count in self.batches.queued.items():
            name = self._metric_model(model)
            queued[name] = queued.get(name, 0) + count
        return queued

    def _metric_model(self, name: str) -> str:
        """A batch line's model as a metric label: its catalog id, or "unknown" (a line's model
        is whatever its author wrote: labels must not be)."""
        try:
            return self.scheduler.resolve(name).id
        except OcrdError:
            return "unknown"

    async def _stop_batches(self) -> None:
        for task in self._tasks:
            if task.get_name() == "ocrd-batches":
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _open_jobs(self) -> None:
        """The jobs store, brought up to date; what a crash left half-written removed."""
        try:
            self.jobs.open()
            self.files.recover()
            self.batches.count_queued()
        except sqlite3.Error as exc:
            raise ConfigError(f"state_dir: the jobs database in {self.jobs.root} cannot be used "
                              f"({exc}); is another ocrd using this state_dir? Set state_dir "
                              "(OCRD_STATE_DIR) to a folder of this daemon's own") from None

    async def _expire_files(self) -> None:
        """Files past their expiry go, once a minute (they are invisible from their expiry on),
        and batches that ended as long ago as their result files expire."""
        while True:
            try:
                removed = await self.files.remove_expired()
                forgotten = await self.batches.remove_ended()
            except OcrdError as exc:
                log.warning("expired files and batches not removed: %s", exc.message)
            else:
                if removed or forgotten:
                    log.info("removed %d expired file(s) and %d batch(es) ended 30 days ago",
                             removed, forgotten)
            await asyncio.sleep(EXPIRY_INTERVAL)

    def _announce_ready(self) -> None:
        log.info("ocrd %s serving the OpenAI API on %s and the control plane on %s",
                 __version__, self.info.http_url, ", ".join(self.info.grpc_addresses))
        self.notifier.ready(self.status_line())
        self.events.add_listener(self._on_event)
        interval = watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(run_watchdog(self.notifier, interval)))

    def _on_event(self, event: Event) -> None:
        if event.kind.startswith("model.") and event.kind != "model.progress":
            self.notifier.status(self.status_line())

    def status_line(self) -> str:
        """What `systemctl status ocrd` shows: which models are loaded or loading."""
        active = self.scheduler.active_models()
        if not active:
            return f"serving {self.info.http_url}; no model loaded"
        parts = [f"{info.id} ({info.state.value})" for info in active]
        return f"serving {self.info.http_url}; " + ", ".join(parts)

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration; a bad file is logged and the old one kept."""
        self.notifier.reloading()
        try:
            settings = load_settings(self._config_arg, self._overrides)
            if self._control is not None:  # tokens first: a bad tokens_file rejects the reload
                self._control.apply_settings(settings)
        except ConfigError as exc:
            log.error("configuration not reloaded: %s", exc.message)
            self.events.publish(Event(kind="config.reloaded", message=f"rejected: {exc.message}"))
        else:
            settings = keep_restart_only_values(self.settings, settings)
            self.settings = settings
            self.app_state.settings = settings
            self.scheduler.apply_settings(settings)
            self.containers.apply_settings(settings)
            self.catalog.recheck_programs()  # tesseract installed since: listed at once
            self.warm.resize()  # fewer: the extra ones end; more: primed now
            self.cluster.wake()  # a new router, address or model list: registered now
            # A model newly preloaded is loaded now (one loaded already is left as it is).
            self._tasks.append(asyncio.create_task(self._load_committed(), name="ocrd-preload"))
            self._tasks.append(asyncio.create_task(self._prime_warm_runners(), name="ocrd-warm"))
            self.info.default_model = settings.default_model
            apply_log_level(settings.log_level)
            if self._http is not None:
                self._http.config.timeout_graceful_shutdown = _graceful_shutdown(settings)
            self.events.publish(Event(kind="config.reloaded", message="configuration reloaded"))
            log.info("configuration reloaded from %s", settings.config_path or "defaults")
        self.notifier.ready(self.status_line())

    async def _shutdown(self, http: _HttpServer, http_task: asyncio.Task[None], control: Any) -> None:
        log.info("stopping: draining in-flight requests, then stopping runners")
        # Withdrawn from the router while the requests drain (bounded by cluster.timeout).
        withdrawal = asyncio.create_task(self.cluster.stop(), name="ocrd-cluster-stop")
        self.notifier.stopping("stopping: draining requests")
        self.app_state.stopping = True
        # Batch lines in flight are abandoned, not failed: uncommitted, they run again after the
        # restart (a line that met the stopping runners would be recorded as a 503 otherwise).
        await self._stop_batches()
        await control.health.enter_graceful_shutdown()
        http.should_exit = True
        await http_task
        await control.stop(grace=1.0)
        await withdrawal
        await self.scheduler.shutdown()
        await self.warm.close()
        self.containers.close()
        self.app_state.request_work.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.jobs.close)
        ThrottledLog.flush_all()
        log.info("ocrd stopped")


def _bind_http(settings: Settings) -> socket.socket:
    host, port = settings.http.host, settings.http.port
    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} for HTTP ({exc.strerror}); "
            f"set http.port or http.host (or --port/--host)"
        ) from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _graceful_shutdown(settings: Settings) -> int:
    """uvicorn's drain of in-flight HTTP requests at shutdown: scheduler.drain_timeout."""
    return int(settings.scheduler.drain_timeout) or 1


def keep_restart_only_values(old: Settings, new: Settings) -> Settings:
    """``new``, but with ``old``'s value of each RESTART_ONLY key that changed, each one logged:
    nothing half-applies what only a restart can apply."""
    for section, keys in RESTART_ONLY.items():
        running = getattr(old, section) if section else old
        loaded = getattr(new, section) if section else new
        kept: dict[str, Any] = {}
        for key in keys:
            if getattr(running, key) != getattr(loaded, key):
                kept[key] = getattr(running, key)
                shown = running.model_dump(mode="json", include={key})[key]  # as the file has it
                log.warning("%s changed; it takes effect after a restart (until then: %s)",
                            f"{section}.{key}" if section else key, shown)
        if kept and section:
            new = new.model_copy(update={section: loaded.model_copy(update=kept)})
        elif kept:
            new = new.model_copy(update=kept)
    return new


def apply_log_level(level: str) -> None:
    """``log_level``, at start and on SIGHUP: the least severe messages logged. httpx logs every
    request it sends (to runners, upstreams) at INFO, two journal lines per API request: those
    lines, like uvicorn's access log, are for debug only."""
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    # uvicorn.Config(access_log=False) stopped this logger at start; its h11 protocol checks
    # hasHandlers() per connection, so propagation decides from the next connection on.
    logging.getLogger("uvicorn.access").propagate = level == "debug"


def serve(settings: Settings, config_arg: str | None, overrides: dict[str, Any]) -> int:
    """Runs the daemon until SIGTERM/SIGINT; returns the process exit code."""

    async def main() -> int:
        return await Daemon(settings, config_arg=config_arg, overrides=overrides).run()

    try:
        # Before anything listens or any runner starts: a directory another user can write
        # would let them swap ocrd's sockets (issue 11), so it is refused here, in one line.
        prepare_socket_dirs(settings.runtime_dir, settings.grpc.socket)
        prepare_state_dir(settings.state_dir)
        limit = raise_open_file_limit()
        log.info("open-file limit %d: at most %d HTTP connections", limit,
                 connection_cap(settings.http.max_connections))
        return asyncio.run(main())
    except OcrdError as exc:
        log.error("%s", exc.message)
        return 1
