"""Diagnostics (``ocrctl doctor``): the seed's troubleshooting section, automated.

Each check is a function of the facts it looks at (a GPU snapshot, a Docker status, a directory,
the text of ``/proc/version``, ...) and returns one ``Check``: a status, one line saying what was
found and, when something needs doing, one line saying how to fix it (``gpu_checks``,
``engine_checks``, ``cache_checks``, ``base.check_user``). ``run_checks`` gathers this host's facts
and runs them all. It blocks (NVML, Docker, the filesystem), so the daemon calls it from a worker
thread; and it runs as whoever calls it: in the daemon, as the daemon's user, which is the point
of asking the daemon. ``local_checks`` runs the same in ``ocrctl`` when no daemon answers.

FAIL is only for what stops serving: the model checked (the daemon's default, or the one asked
about) cannot be planned or does not fit, the cache cannot be read, that model's snapshot is
incomplete. Docker and vLLM problems are WARN while another engine can serve that model, FAIL when
vLLM is its only way (forced by the config, or no other engine of the model is installed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ocrd.cache.inventory import resolve_hub_dir
from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.engines import in_hf_cache
from ocrd.errors import ModelNotFound, OcrdError
from ocrd.ops.doctor.base import FAIL, OK, SKIPPED, WARN, Check, ModelFit, check_user
from ocrd.ops.doctor.cache_checks import (
    check_downloads,
    check_hf_cache,
    check_hf_cache_access,
    check_hf_cache_mount,
    check_hf_cache_wsl,
)
from ocrd.ops.doctor.engine_checks import (
    check_docker,
    check_docker_socket,
    check_nvidia_runtime,
    check_transformers,
    check_vllm_image,
    vllm_severity,
)
from ocrd.ops.doctor.gpu_checks import check_gpu_devices, check_gpu_memory, check_nvml
from ocrd.ops.doctor.state_checks import check_state_store
from ocrd.planning.availability import transformers_availability
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.vllm.docker_host import DockerStatus, docker_client, docker_status, image_present

if TYPE_CHECKING:
    from ocrd.core.scheduler import Scheduler

__all__ = ["FAIL", "OK", "SKIPPED", "WARN", "Check", "ModelFit", "local_checks", "plan_fit",
           "run_checks"]

async def plan_fit(scheduler: Scheduler, model: str, *, explicit: bool) -> ModelFit:
    """What a load of ``model`` would get now. An ``explicit`` name that exists nowhere is the
    caller's mistake and raises ModelNotFound; every other problem is part of the diagnosis."""
    try:
        entry = scheduler.resolve(model)
    except ModelNotFound as exc:
        if explicit and exc.code != "model_not_downloaded":
            raise
        return ModelFit(model, error=exc.message)
    except OcrdError as exc:
        return ModelFit(model, error=exc.message)
    try:
        return ModelFit(entry.id, decision=await scheduler.explain(entry.id))
    except OcrdError as exc:
        return ModelFit(entry.id, error=exc.message)


def run_checks(
    settings: Settings,
    fit: ModelFit,
    gpu: GpuProbe,
    catalog: Catalog,
    *,
    dev_root: Path = Path("/dev"),
    proc_root: Path = Path("/proc"),
) -> list[Check]:
    """Every check, in the order ``ocrctl doctor`` prints them (blocks: call it from a thread)."""
    hub_dir = resolve_hub_dir(settings.cache.hub_dir)
    snapshot = gpu.snapshot()
    transformers = transformers_availability(settings)
    entry = _entry(catalog, fit.model)
    severity = vllm_severity(settings, entry, transformers)
    launcher = settings.vllm.launcher
    docker = docker_status() if launcher == "docker" else DockerStatus(False, "not used")
    repos = [e.id for e in catalog.entries() if in_hf_cache(e)]
    return [
        check_nvml(snapshot, _driver_loaded(dev_root, proc_root)),
        check_gpu_devices(dev_root),
        check_gpu_memory(fit),
        check_transformers(transformers),
        check_docker(docker, launcher, severity),
        check_docker_socket(os.environ, launcher, severity),
        check_nvidia_runtime(docker, snapshot.available, launcher, severity),
        check_vllm_image(docker, settings.vllm.image, _image_present(docker, settings.vllm.image),
                         settings, severity),
        check_hf_cache(hub_dir),
        check_hf_cache_access(hub_dir),
        check_hf_cache_wsl(hub_dir, _read(proc_root / "version")),
        check_hf_cache_mount(hub_dir, launcher),
        check_downloads(hub_dir, repos, entry.id if entry else fit.model),
        check_state_store(settings.state_dir),
        check_user(os.getuid(), os.getgid(), os.getgroups()),
    ]


def local_checks(model: str = "") -> list[Check]:
    """The same checks, run in this process as its user: ``ocrctl doctor`` without a daemon.

    The configuration is read as ``ocrd serve`` would read it; the planner is asked through a
    scheduler that never starts a runner."""
    import asyncio

    from ocrd.config.loading import load_settings
    from ocrd.core.directory import ModelDirectory
    from ocrd.core.scheduler import Scheduler
    from ocrd.errors import ConfigError

    try:
        settings = load_settings()
    except ConfigError as exc:
        return [Check("config", FAIL, f"the configuration does not load: {exc.message}",
                      "fix it first: `ocrd check-config` names the key")]
    catalog = Catalog.load_default({"tesseract": settings.builtin.tesseract_cmd})
    scheduler = Scheduler(settings, ModelDirectory(catalog, settings), _no_runner)
    fit = asyncio.run(plan_fit(scheduler, model or settings.default_model, explicit=bool(model)))
    return run_checks(settings, fit, GpuProbe(), catalog)


def _no_runner(spec: object) -> NoReturn:
    raise AssertionError("diagnostics never load a model")


def _entry(catalog: Catalog, model: str) -> CatalogEntry | None:
    try:
        return catalog.resolve(model)
    except OcrdError:
        return None


def _image_present(status: DockerStatus, image: str) -> bool | None:
    if not status.reachable:
        return None
    client = docker_client()
    if isinstance(client, str):
        return None
    try:
        return image_present(client, image)
    except Exception:  # Docker went away since: the image check is skipped
        return None
    finally:
        client.close()


def _driver_loaded(dev_root: Path, proc_root: Path) -> bool:
    return (dev_root / "nvidiactl").exists() or (proc_root / "driver" / "nvidia" / "version").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
