"""FakeNvml: the test double for NVML on machines without a GPU, behind pynvml's interface.

It implements the pynvml functions that ``ocrd.planning.gpu.GpuProbe`` calls, with pynvml's names,
argument order, result shapes (``.total/.used/.free``, ``.gpu``, ``.pid/.usedGpuMemory``) and
error classes (``NVMLError`` and the ``NVMLError_NotSupported`` / ``NVMLError_LibraryNotFound``
subclasses). The test chooses the devices, and which call fails (``fail``: function name -> error).
``nvml_env`` shows chosen devices to a daemon in a subprocess (``tests/support/nvml_shim``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


@dataclass
class FakeDevice:
    name: str
    uuid: str
    total: int
    used: int
    utilization: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)


class FakeNvml:
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound

    def __init__(
        self,
        devices: list[FakeDevice] | None = None,
        *,
        driver_version: str = "550.54.15",
        cuda_version: int = 12040,
        fail: dict[str, NVMLError] | None = None,
    ):
        self.devices = list(devices or [])
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.fail = dict(fail or {})
        self.inits = 0  # nvmlInit minus nvmlShutdown: 0 once every snapshot has cleaned up

    def _check(self, function: str) -> None:
        if function in self.fail:
            raise self.fail[function]

    def nvmlInit(self) -> None:
        self._check("nvmlInit")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.inits -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.devices):
            raise NVMLError("Invalid Argument")
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        self._check("nvmlDeviceGetName")
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        self._check("nvmlDeviceGetUUID")
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> SimpleNamespace:
        self._check("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=handle.total, used=handle.used, free=handle.total - handle.used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=handle.utilization, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.processes]


GIB = 2**30


def two_gpus(*processes: tuple[int, int | None]) -> FakeNvml:
    """Two devices: an 80 GiB H100 holding ``processes``, and an idle 24 GiB L4."""
    return FakeNvml([
        FakeDevice("NVIDIA H100 80GB HBM3", "GPU-11111111-aaaa-bbbb-cccc-000000000000",
                   total=80 * GIB, used=20 * GIB, utilization=37, processes=list(processes)),
        FakeDevice("NVIDIA L4", "GPU-22222222-aaaa-bbbb-cccc-000000000000",
                   total=24 * GIB, used=0),
    ])


def nvml_env(*devices: FakeDevice) -> dict[str, str]:
    """The environment that makes an ``ocrd serve`` subprocess see ``devices`` through NVML
    (``tests/support/nvml_shim/pynvml.py`` first on its path, the repository after it)."""
    shim = Path(__file__).resolve().parent / "nvml_shim"
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(filter(None, [str(shim), str(repo), os.environ.get("PYTHONPATH")]))
    listed = [dataclasses.asdict(device) for device in devices]
    return {"PYTHONPATH": path, "FAKE_NVML_DEVICES": json.dumps(listed)}
