"""GPU inventory through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

``GpuProbe.snapshot()`` answers what ``ocrctl gpu`` shows: the driver and CUDA versions, and per
device its name, UUID, memory (total / used / free), utilisation and the processes holding memory
on it (pid, bytes, name from ``/proc/<pid>/comm``). It never raises for a host without a GPU: a
missing driver or library, or an NVML call that fails, gives ``available=False`` with a one-line
reason. Which process serves which model is not known here; the control plane attributes pids.

NVML is injectable: the daemon uses ``pynvml``; tests pass ``tests.support.fake_nvml.FakeNvml``.
Each snapshot initialises NVML and shuts it down again (NVML counts inits, so this is safe beside
other users in the process); snapshots are serialised by a lock. The daemon calls
``snapshot_async()``, which runs the blocking NVML calls in a worker thread.

``CUDA_VISIBLE_DEVICES`` (read from the daemon's environment at each snapshot) limits the devices
reported, as CUDA would limit what ocrd's runners can use:

* unset: every device NVML sees;
* a comma-separated list: only the devices listed, each entry either an index (taken as NVML's
  index; CUDA counts in the same order when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) or a UUID or a unique
  prefix of one (``GPU-8a1b...``; ``MIG-`` entries likewise). As in CUDA, the list ends at the
  first entry that names no device, and a device listed twice is reported once;
* a list that selects no device (``""``, ``-1``, ...): ``available=False``, saying so.

Devices keep NVML's index (the proto's ``GpuDevice.index``), in the order the variable lists them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ENV_VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int  # 0 where NVML cannot tell (e.g. without the rights to see it)
    name: str  # /proc/<pid>/comm; "" for a process this host's /proc does not show


@dataclass(frozen=True)
class GpuDevice:
    index: int  # NVML's index
    name: str
    uuid: str
    total: int  # bytes
    used: int
    free: int
    utilization: int  # percent, 0 where the device does not report it
    processes: list[GpuProcess] = field(default_factory=list)


@dataclass(frozen=True)
class GpuSnapshot:
    available: bool
    reason: str = ""  # why not available; one line
    driver_version: str = ""
    cuda_version: str = ""  # e.g. "12.4": the newest CUDA the driver supports
    devices: list[GpuDevice] = field(default_factory=list)


def unavailable(reason: str) -> GpuSnapshot:
    return GpuSnapshot(available=False, reason=" ".join(reason.split()))


class _CallFailed(Exception):
    """An NVML call failed; the message says which call and why."""


class GpuProbe:
    def __init__(
        self,
        nvml: Any = None,
        *,
        environ: Mapping[str, str] | None = None,
        proc_root: Path = Path("/proc"),
    ):
        self._nvml = nvml  # None: import pynvml at the first snapshot
        self._environ = environ  # None: os.environ, read at each snapshot
        self._proc = proc_root
        self._lock = threading.Lock()

    async def snapshot_async(self) -> GpuSnapshot:
        return await asyncio.to_thread(self.snapshot)

    def snapshot(self) -> GpuSnapshot:
        nvml = self._nvml if self._nvml is not None else _import_pynvml()
        if isinstance(nvml, str):
            return unavailable(nvml)
        with self._lock:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                return unavailable(f"no NVIDIA driver: NVML could not start ({_message(exc)})")
            try:
                return self._read(nvml)
            except _CallFailed as exc:
                return unavailable(str(exc))
            finally:
                try:
                    nvml.nvmlShutdown()
                except nvml.NVMLError:
                    pass

    def _read(self, nvml: Any) -> GpuSnapshot:
        driver = _text(_call(nvml, "nvmlSystemGetDriverVersion"))
        cuda = _cuda_version(nvml)
        count = _call(nvml, "nvmlDeviceGetCount")
        handles = [_call(nvml, "nvmlDeviceGetHandleByIndex", i) for i in range(count)]
        uuids = [_text(_call(nvml, "nvmlDeviceGetUUID", h)) for h in handles]
        environ = os.environ if self._environ is None else self._environ
        chosen = visible_indices(environ.get(ENV_VISIBLE), uuids)
        if not chosen:
            return unavailable(
                f"{ENV_VISIBLE}={environ.get(ENV_VISIBLE)!r} selects none of this host's "
                f"{count} GPU(s)" if count else "the NVIDIA driver reports no GPU"
            )
        devices = [self._device(nvml, i, handles[i], uuids[i]) for i in chosen]
        return GpuSnapshot(True, "", driver, cuda, devices)

    def _device(self, nvml: Any, index: int, handle: Any, uuid: str) -> GpuDevice:
        memory = _call(nvml, "nvmlDeviceGetMemoryInfo", handle, index=index)
        not_supported = getattr(nvml, "NVMLError_NotSupported", ())
        try:
            utilization = int(_call(nvml, "nvmlDeviceGetUtilizationRates", handle, index=index).gpu)
        except _CallFailed as exc:
            if not isinstance(exc.__cause__, not_supported):
                raise
            utilization = 0  # e.g. MIG instances and some older boards
        processes = [
            GpuProcess(int(p.pid), int(p.usedGpuMemory or 0), self._process_name(int(p.pid)))
            for p in _call(nvml, "nvmlDeviceGetComputeRunningProcesses", handle, index=index)
        ]
        return GpuDevice(
            index=index,
            name=_text(_call(nvml, "nvmlDeviceGetName", handle, index=index)),
            uuid=uuid,
            total=int(memory.total),
            used=int(memory.used),
            free=int(memory.free),
            utilization=utilization,
            processes=processes,
        )

    def _process_name(self, pid: int) -> str:
        try:
            return (self._proc / str(pid) / "comm").read_text().strip()
        except OSError:  # gone, or in another pid namespace
            return ""


def visible_indices(value: str | None, uuids: list[str]) -> list[int]:
    """NVML indices that ``CUDA_VISIBLE_DEVICES=value`` leaves visible (see the module doc)."""
    if value is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in (part.strip() for part in value.split(",")):
        index = _entry_index(entry, uuids)
        if index is None:
            break  # CUDA ignores the rest of the list after an invalid entry
        if index not in chosen:
            chosen.append(index)
    return chosen


def _entry_index(entry: str, uuids: list[str]) -> int | None:
    if entry.isdigit():
        index = int(entry)
        return index if index < len(uuids) else None
    if not entry:
        return None
    matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def _import_pynvml() -> ModuleType | str:
    try:
        import pynvml
    except ImportError:
        return "no NVML: the nvidia-ml-py package (pynvml) is not installed"
    return pynvml


def _call(nvml: Any, function: str, *args: Any, index: int | None = None) -> Any:
    try:
        return getattr(nvml, function)(*args)
    except nvml.NVMLError as exc:
        where = f" for GPU {index}" if index is not None else ""
        raise _CallFailed(f"NVML {function}{where} failed: {_message(exc)}") from exc


def _cuda_version(nvml: Any) -> str:
    function = (
        "nvmlSystemGetCudaDriverVersion_v2"
        if hasattr(nvml, "nvmlSystemGetCudaDriverVersion_v2")
        else "nvmlSystemGetCudaDriverVersion"
    )
    version = int(_call(nvml, function))  # e.g. 12040 for 12.4
    return f"{version // 1000}.{version % 1000 // 10}" if version else ""


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
