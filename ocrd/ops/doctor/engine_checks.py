"""Engine checks: the transformers engine, and what vLLM containers need (Docker reachable, its
socket open to this user, the NVIDIA runtime, the image present locally).

Docker and vLLM problems take the ``severity`` of ``vllm_severity``: WARN while another engine
can serve the model being diagnosed, FAIL when vLLM is its only way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ocrd.catalog import CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.wishes import resolve_wishes
from ocrd.ops.doctor.base import FAIL, OK, SKIPPED, WARN, Check, group_of, user_name
from ocrd.planning.availability import Availability
from ocrd.runners.vllm.docker_host import DEFAULT_SOCKET, DockerStatus, install_hint

DOCKER_SOCKET = Path(DEFAULT_SOCKET)


def vllm_severity(settings: Settings, entry: CatalogEntry | None, transformers: Availability) -> str:
    """FAIL when vLLM is the model's only way to be served, else WARN."""
    wishes = resolve_wishes(entry, settings) if entry else None
    if settings.planner.engine == "vllm" or (wishes and wishes.engine == "vllm"):
        return FAIL
    if entry is None or "vllm" not in entry.engines or "builtin" in entry.engines:
        return WARN
    return WARN if "transformers" in entry.engines and transformers.available else FAIL


def check_docker(status: DockerStatus, launcher: str, severity: str) -> Check:
    if launcher != "docker":
        return Check("docker", SKIPPED, f"vllm.launcher = {launcher}: vLLM runs without Docker")
    if status.reachable:
        runtimes = ", ".join(status.runtimes) or "none reported"
        return Check("docker", OK, f"Docker {status.version} is reachable (runtimes: {runtimes})")
    if "not installed" in status.reason:
        fix = install_hint()
    else:
        fix = ("start Docker (sudo systemctl start docker); if it runs, let ocrd's user open its "
               "socket (see docker-socket)")
    return Check("docker", severity, f"vLLM containers cannot start: {status.reason}", fix)


def check_nvidia_runtime(status: DockerStatus, gpu_available: bool, launcher: str, severity: str) -> Check:
    name = "nvidia-runtime"
    if launcher != "docker":
        return Check(name, SKIPPED, f"vllm.launcher = {launcher}: no containers")
    if not status.reachable:
        return Check(name, SKIPPED, "Docker is not reachable")
    if status.nvidia_runtime:
        return Check(name, OK, "Docker has the NVIDIA runtime: containers can use the GPU")
    if not gpu_available:
        return Check(name, SKIPPED, "no usable NVIDIA GPU, so no GPU for containers either")
    return Check(name, severity, "Docker has no NVIDIA runtime: vLLM containers cannot use the GPU",
                 "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure "
                 "--runtime=docker && sudo systemctl restart docker`")


def check_vllm_image(status: DockerStatus, image: str, present: bool | None, settings: Settings,
                     severity: str) -> Check:
    name = "vllm-image"
    if settings.vllm.launcher != "docker":
        return Check(name, SKIPPED, f"vllm.launcher = {settings.vllm.launcher}: no image needed")
    if not status.reachable or present is None:
        return Check(name, SKIPPED, "Docker is not reachable")
    if present:
        return Check(name, OK, f"{image} is present locally")
    if settings.vllm.pull_images:
        return Check(name, WARN, f"{image} is not present locally: the first vLLM load pulls it "
                                 f"(several GB) and waits", f"ocrctl pull-image {image} beforehand")
    return Check(name, severity, f"{image} is not present locally, and ocrd never pulls on its own",
                 f"ocrctl pull-image {image} (or set vllm.pull_images = true)")


def check_docker_socket(environ: Mapping[str, str], launcher: str, severity: str, user: str = "") -> Check:
    name = "docker-socket"
    if launcher != "docker":
        return Check(name, SKIPPED, f"vllm.launcher = {launcher}: Docker is not used")
    host = environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return Check(name, SKIPPED, f"DOCKER_HOST={host} is not a Unix socket")
    path = Path(host.removeprefix("unix://")) if host else DOCKER_SOCKET
    if not path.exists():
        return Check(name, SKIPPED, f"no Docker socket at {path}")
    user = user or user_name()
    if os.access(path, os.R_OK | os.W_OK):
        return Check(name, OK, f"{user} can open {path}")
    group = group_of(path) or "docker"
    return Check(name, severity, f"{user} cannot open {path} (group {group})",
                 f"sudo usermod -aG {group} {user} (under systemd: SupplementaryGroups={group}); "
                 f"members of {group} are as powerful as root")


def check_transformers(availability: Availability) -> Check:
    if availability.available:
        return Check("transformers", OK, "the transformers engine is installed (torch, transformers)")
    # The fix names the interpreter that lacks them and how this ocrd was installed.
    fix = availability.fix or "set transformers.python to a venv that has torch and transformers"
    if availability.fix:
        fix += ", or set transformers.python to a venv that has torch and transformers"
    return Check("transformers", WARN, f"the transformers engine is not available: "
                                       f"{availability.reason.split(';')[0]}", fix)
