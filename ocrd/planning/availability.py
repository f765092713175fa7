"""Which engines this host can run, and on which device — asked without importing them.

The daemon never imports torch or transformers (start-up time, memory, and a broken CUDA install
must not take the control plane down), so availability is a question about installed packages,
answered by ``importlib.util.find_spec`` for ocrd's own interpreter or by a one-off probe of the
configured one. Whether a GPU is there, and which one a model gets, is the planner's question
(``ocrd.planning.planner``, from NVML).

Only the engines the table marks ``optional`` (``ocrd.core.engines``) are probed; the others are
always there. vLLM's availability depends on its launcher: the docker launcher needs a reachable
Docker engine (with the NVIDIA runtime unless ``vllm.device = "cpu"``), asked through
``docker_host`` and cached for a few seconds (``DockerStatusCache``), because the planner asks on
the event loop; the process launcher needs the ``vllm`` package importable by ``vllm.python``.
The Docker status is injected (``docker_status``): the daemon builds one ``DockerStatusCache``
and hands its ``get`` to the directory; tests pass their own answer.

Which packages an interpreter has is remembered by one ``MissingPackages`` for the process (the
import system's own caches are per process too; the directory, the planner, ``explain``, the
doctor and the warm runners all ask it): a package found is kept, one found missing is asked
again after a few seconds, and a SIGHUP (``recheck_packages``) asks every one again, so an extra
installed after start-up is served without a restart.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ocrd.config.settings import Settings
from ocrd.core.engines import ENGINES
from ocrd.install_hint import install_command
from ocrd.runners.vllm import docker_host
from ocrd.runners.vllm.docker_host import DockerStatus

TRANSFORMERS_PACKAGES = ("torch", "transformers")
VLLM_PACKAGES = ("vllm",)
DOCKER_STATUS_TTL = 5.0  # seconds a Docker status answer is reused
RECHECK_MISSING_AFTER = 3.0  # seconds a "not installed" answer is reused before it is asked again
_PROBE = (
    "import importlib.util as u, sys; "
    "missing = [n for n in sys.argv[1:] if u.find_spec(n) is None]; print(' '.join(missing))"
)


log = logging.getLogger("ocrd.planning.availability")

# Docker's status now (``DockerStatusCache.get``, or a test's answer).
DockerStatusProbe = Callable[[], DockerStatus]


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""
    fix: str = ""  # what to do about it, when something can be done (also in ``reason``)


def transformers_availability(settings: Settings) -> Availability:
    python = settings.transformers.python or sys.executable
    missing = _missing_packages(python, TRANSFORMERS_PACKAGES, engine="transformers")
    if missing is None:
        return Availability(False, f"cannot run {python} (transformers.python)")
    if missing:
        fix = install_command("transformers", python)
        return Availability(
            False,
            f"{', '.join(missing)} not installed for {python}; install the extra: {fix} "
            f"(or set transformers.python to a venv that has them)",
            fix,
        )
    return Availability(True)


def engine_availability(engine: str, settings: Settings, docker_status: DockerStatusProbe) -> Availability:
    """Whether this host can run ``engine`` now: always, unless the engine table marks it
    ``optional``; then its probe answers."""
    kind = ENGINES.get(engine)
    if kind is None:
        return Availability(False, f"ocrd has no {engine} engine")
    if not kind.optional:
        return Availability(True)
    return _PROBES[engine](settings, docker_status)


def vllm_settings_availability(settings: Settings, docker_status: DockerStatusProbe) -> Availability:
    """vLLM with the configured launcher and device (probing Docker or the interpreter)."""
    config = settings.vllm
    if config.launcher == "process":
        return vllm_availability("process", None, vllm_package_availability(config.python),
                                 device=config.device)
    return vllm_availability("docker", docker_status(), device=config.device)


def vllm_package_availability(python: str) -> Availability:
    """The ``vllm`` package importable by ``python`` (empty: ocrd's own interpreter)."""
    interpreter = python or sys.executable
    missing = _missing_packages(interpreter, VLLM_PACKAGES, engine="vllm")
    if missing is None:
        return Availability(False, f"cannot run {interpreter} (vllm.python)")
    if missing:
        return Availability(False, f"the vllm package is not installed for {interpreter}: install "
                                   f"it in a venv and set vllm.python to that venv's python")
    return Availability(True)


class _Answer(NamedTuple):
    missing: tuple[str, ...] | None  # None: the interpreter could not be run
    taken: float  # when it was asked (the clock's time)
    stale: bool = False  # asked again at the next use, whatever its age (a reload)


class MissingPackages:
    """Which of some packages an interpreter cannot import (None: it cannot be run), remembered.

    A complete answer is kept: packages do not vanish from under a running daemon in practice. A
    missing one is asked again once it is older than ``ttl``, so that an extra installed after
    start-up is seen by the next load, explain or listing, while the probe of another
    interpreter (a subprocess) runs at most once per ``ttl`` however many requests ask.
    ``recheck`` (SIGHUP) has every answer asked again at its next use. A missing answer that
    turns complete is logged once, at INFO."""

    def __init__(self, *, ttl: float = RECHECK_MISSING_AFTER, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()  # asked from the event loop and from worker threads
        self._answers: dict[tuple[str, tuple[str, ...]], _Answer] = {}

    def __call__(self, python: str, packages: tuple[str, ...], *, engine: str = "") -> tuple[str, ...] | None:
        key = (python, packages)
        with self._lock:
            known = self._answers.get(key)
        if known is not None and not known.stale and (
                known.missing == () or self._clock() - known.taken < self._ttl):
            return known.missing
        missing = _probe_packages(python, packages)
        with self._lock:
            before = self._answers.get(key)
            self._answers[key] = _Answer(missing, self._clock())
        if before is not None and before.missing != () and missing == ():
            names = ", ".join(before.missing or packages)
            where = "" if python == sys.executable else f" for {python}"
            what = f"the {engine} engine is" if engine else "they are"
            log.info("%s installed after start-up%s: %s available now", names, where, what)
        return missing

    def recheck(self) -> None:
        """Every answer is asked again at its next use (the one before is kept, so that an
        extra installed meanwhile is logged)."""
        with self._lock:
            self._answers = {key: answer._replace(stale=True) for key, answer in self._answers.items()}

    def cache_clear(self) -> None:
        """Forgets every answer (tests start from none)."""
        with self._lock:
            self._answers.clear()


def _probe_packages(python: str, packages: tuple[str, ...]) -> tuple[str, ...] | None:
    if python == sys.executable:
        # The import system caches directory listings: without this a package installed after
        # start-up can stay unseen.
        importlib.invalidate_caches()
        return tuple(name for name in packages if importlib.util.find_spec(name) is None)
    try:
        done = subprocess.run([python, "-c", _PROBE, *packages], capture_output=True, text=True,
                              timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(done.stdout.split())


# This process's answers (the import system's caches are per process too).
_missing_packages = MissingPackages()


def recheck_packages() -> None:
    """SIGHUP: which packages each interpreter has is asked again at the next use."""
    _missing_packages.recheck()


def vllm_availability(launcher: str, docker: DockerStatus | None,
                      process: Availability | None = None, *, device: str = "cuda") -> Availability:
    """Whether vLLM could be started on this host by ``launcher`` (``vllm.launcher``), from facts
    gathered elsewhere (pure, so the planner's scenarios state them): the docker launcher needs a
    reachable Docker engine, with the NVIDIA runtime when vLLM runs on a GPU (``device`` "cuda";
    a CPU build, ``vllm.device = "cpu"``, needs none); the process launcher needs the ``vllm``
    package (``process``: whether ``vllm.python`` can import it)."""
    if launcher == "process":
        if process is not None and process.available:
            return Availability(True)
        why = process.reason if process is not None else "the vllm package was not checked"
        return Availability(False, f"{why} (vllm.launcher = 'process'; or use the docker launcher)")
    if docker is None or not docker.reachable:
        why = docker.reason if docker is not None else "Docker was not checked"
        return Availability(False, f"{why}; vLLM runs in Docker (vllm.launcher = 'docker')")
    if device == "cuda" and not docker.nvidia_runtime:
        return Availability(False, "Docker has no NVIDIA runtime (install nvidia-container-toolkit "
                                   "and restart Docker): vLLM containers could not use the GPU "
                                   "(or set vllm.device = 'cpu' for a CPU build of vLLM)")
    return Availability(True)


class DockerStatusCache:
    """``docker_host.docker_status()``, reused for ``ttl`` seconds. The planner asks on the event
    loop and Docker's answer blocks (up to its timeout when the engine hangs), so only the first
    question waits for it (the daemon asks it off the loop at start-up); later ones get the last
    answer at once while a thread fetches a fresh one once it is older than ``ttl``."""

    def __init__(self, probe: Callable[[], DockerStatus] = docker_host.docker_status, *,
                 ttl: float = DOCKER_STATUS_TTL, clock: Callable[[], float] = time.monotonic):
        self._probe = probe
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._status: DockerStatus | None = None
        self._taken = 0.0
        self._refreshing = False

    def get(self) -> DockerStatus:
        with self._lock:
            status, stale = self._status, self._clock() - self._taken >= self._ttl
            refresh = status is not None and stale and not self._refreshing
            self._refreshing = self._refreshing or refresh
        if status is None:
            return self.refresh()
        if refresh:
            threading.Thread(target=self.refresh, daemon=True, name="docker-status").start()
        return status

    def refresh(self) -> DockerStatus:
        """Asks Docker now (blocking) and keeps the answer."""
        try:
            status = self._probe()
        finally:
            with self._lock:
                self._refreshing = False
        with self._lock:
            self._status, self._taken = status, self._clock()
        return status


# How each optional engine of the table (``EngineKind.optional``) is probed.
_PROBES: dict[str, Callable[[Settings, DockerStatusProbe], Availability]] = {
    "transformers": lambda settings, docker_status: transformers_availability(settings),
    "vllm": vllm_settings_availability,
}
