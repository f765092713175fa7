"""Which engines this host can run, and on which device — asked without importing them.

The daemon never imports torch or transformers (start-up time, memory, and a broken CUDA install
must not take the control plane down), so availability is a question about installed packages,
answered by ``importlib.util.find_spec`` for ocrd's own interpreter or by a one-off probe of the
configured one. Whether a GPU is there, and which one a model gets, is the planner's question
(``ocrd.planner``, from NVML).
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from dataclasses import dataclass

from ocrd.config import Settings
from ocrd.docker_host import DockerStatus

TRANSFORMERS_PACKAGES = ("torch", "transformers")
_PROBE = (
    "import importlib.util as u, sys; "
    "missing = [n for n in sys.argv[1:] if u.find_spec(n) is None]; print(' '.join(missing))"
)


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


def transformers_availability(settings: Settings) -> Availability:
    python = settings.transformers.python or sys.executable
    missing = _missing_packages(python, TRANSFORMERS_PACKAGES)
    if missing is None:
        return Availability(False, f"cannot run {python} (transformers.python)")
    if missing:
        return Availability(
            False,
            f"{', '.join(missing)} not installed for {python}; install the extra: "
            f"pip install 'ocrd-vlm[transformers]' (or set transformers.python to a venv that has them)",
        )
    return Availability(True)


def engine_availability(engine: str, settings: Settings) -> Availability:
    if engine == "builtin":
        return Availability(True)
    if engine == "transformers":
        return transformers_availability(settings)
    return Availability(False, f"the {engine} engine is not part of this ocrd release yet")


@functools.lru_cache(maxsize=8)
def _missing_packages(python: str, packages: tuple[str, ...]) -> tuple[str, ...] | None:
    if python == sys.executable:
        return tuple(name for name in packages if importlib.util.find_spec(name) is None)
    try:
        done = subprocess.run([python, "-c", _PROBE, *packages], capture_output=True, text=True,
                              timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(done.stdout.split())


def vllm_availability(launcher: str, docker: DockerStatus | None, local_vllm: str | None) -> Availability:
    """Whether vLLM could be started on this host by ``launcher`` (``vllm.launcher``): the docker
    launcher needs a reachable Docker engine with the NVIDIA runtime (GPU containers); the process
    launcher needs a ``vllm`` executable (``local_vllm``: its path, None when absent). Pure, so the
    planner's scenarios can state the host's facts; the probes that gather them arrive with the
    vLLM runner."""
    if launcher == "process":
        if local_vllm:
            return Availability(True)
        return Availability(False, "vllm.launcher is 'process' but no vllm executable was found "
                                   "(vllm.command); pip install vllm, or use the docker launcher")
    if docker is None or not docker.reachable:
        why = docker.reason if docker is not None else "Docker was not checked"
        return Availability(False, f"{why}; vLLM runs in Docker (vllm.launcher = 'docker')")
    if not docker.nvidia_runtime:
        return Availability(False, "Docker has no NVIDIA runtime (install nvidia-container-toolkit "
                                   "and restart Docker): vLLM containers could not use the GPU")
    return Availability(True)
