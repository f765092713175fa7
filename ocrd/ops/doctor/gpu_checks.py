"""GPU checks: the driver and NVML, whether this user may open the device nodes, and whether the
model fits in the memory free now (the planner's decision)."""

from __future__ import annotations

import os
from pathlib import Path

from ocrd.ops.doctor.base import (
    FAIL,
    OK,
    SKIPPED,
    WARN,
    Check,
    ModelFit,
    group_of,
    size,
    user_name,
)
from ocrd.planning.gpu import GpuSnapshot
from ocrd.planning.planner import Decision


def check_nvml(snapshot: GpuSnapshot, driver_loaded: bool) -> Check:
    if snapshot.available:
        names = ", ".join(device.name for device in snapshot.devices)
        count = len(snapshot.devices)
        return Check("nvml", OK, f"driver {snapshot.driver_version} (CUDA {snapshot.cuda_version or '-'}), "
                                 f"{count} GPU{'s' if count != 1 else ''}: {names}")
    if not driver_loaded:
        return Check("nvml", WARN, f"no NVIDIA GPU driver, so every model runs on the CPU (VLMs "
                                   f"slowly): {snapshot.reason}",
                     "on a host with an NVIDIA GPU, install its driver: `nvidia-smi` must list the GPU")
    if "not installed" in snapshot.reason:
        fix = "pip install nvidia-ml-py into ocrd's venv"
    else:
        fix = ("run `nvidia-smi`: a driver/library version mismatch needs a reboot (or reloading "
               "the nvidia kernel module)")
    return Check("nvml", WARN, f"the NVIDIA driver is loaded but ocrd cannot read the GPUs, so it "
                               f"plans for the CPU: {snapshot.reason}", fix)


def check_gpu_devices(dev_root: Path = Path("/dev"), user: str = "") -> Check:
    """Whether this user can open the NVIDIA device nodes (runners need them to use the GPU)."""
    nodes = sorted(path for path in dev_root.glob("nvidia*") if not path.is_dir())
    if not nodes:
        return Check("gpu-devices", SKIPPED, f"no NVIDIA device nodes in {dev_root}")
    user = user or user_name()
    denied = [path for path in nodes if not os.access(path, os.R_OK | os.W_OK)]
    if not denied:
        return Check("gpu-devices", OK, f"{user} can open {', '.join(p.name for p in nodes)}")
    group = group_of(denied[0]) or "video"
    return Check("gpu-devices", WARN,
                 f"{user} cannot open {', '.join(str(p) for p in denied)} (group {group}): "
                 f"runners cannot use the GPU",
                 f"sudo usermod -aG {group} {user} (under systemd: SupplementaryGroups={group}), "
                 f"then restart ocrd")


def check_gpu_memory(fit: ModelFit) -> Check:
    """The model (the daemon's default unless one is named) against the memory free for it now."""
    name = "gpu-memory"
    if fit.error or fit.decision is None:
        return Check(name, FAIL, f"{fit.model} cannot be served: {fit.error or 'no decision'}",
                     "`ocrctl models` lists what this host can serve; fix the cause, or set "
                     "default_model to one of them")
    decision = fit.decision
    first = decision.reasons[0] if decision.reasons else ""
    if not decision.engine:
        return Check(name, FAIL, f"no engine can serve {decision.model}: {first}",
                     f"`ocrctl mode explain {decision.model}` says why, engine by engine")
    plan = _plan_words(decision)
    if decision.fits:
        needs = f"needs {size(decision.estimated_bytes)}, " if decision.estimated_bytes else ""
        because = f": {first}" if first else ""
        return Check(name, OK, f"{decision.model} fits ({needs}{plan}){because}")
    if decision.evictable_models:
        fix = f"unload idle models to make room: ocrctl unload {' '.join(decision.evictable_models)}"
    else:
        fix = ("free GPU memory (`ocrctl gpu` shows who holds it), load it with --quant 4bit, or "
               "choose a smaller default_model")
    return Check(name, FAIL, f"{decision.model} does not fit: needs {size(decision.estimated_bytes)} "
                             f"({plan}), {size(decision.shortfall_bytes)} missing", fix)


def _plan_words(decision: Decision) -> str:
    words = [f"{decision.engine} engine on {decision.device}"]
    if decision.quantization not in ("", "none"):
        words.append(decision.quantization)
    if decision.gpu_memory_utilization:
        words.append(f"gpu_memory_utilization {decision.gpu_memory_utilization:.2f}")
    return ", ".join(words)
