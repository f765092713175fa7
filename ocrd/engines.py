"""Which engines this host can run, and on which device — asked without importing them.

The daemon never imports torch or transformers (start-up time, memory, and a broken CUDA install
must not take the control plane down), so availability is a question about installed packages,
answered by ``importlib.util.find_spec`` for ocrd's own interpreter or by a one-off probe of the
configured one, and the GPU is detected from the NVIDIA driver's device files.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ocrd.config import Settings

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


def nvidia_gpu_present() -> bool:
    """True when the NVIDIA driver is loaded (its control device exists)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def resolve_device(setting: str | None) -> str:
    """``auto`` becomes cuda:0 with an NVIDIA GPU, else cpu; ``cuda`` becomes cuda:0."""
    if setting in (None, "", "auto"):
        return "cuda:0" if nvidia_gpu_present() else "cpu"
    return "cuda:0" if setting == "cuda" else setting
