"""ocrd.planning.gpu.GpuProbe over FakeNvml (this machine has no GPU; the real pynvml path is checked on a
GPU machine, and here only in that it reports a missing driver without raising)."""

from __future__ import annotations

import os

import pytest

from ocrd.planning.gpu import GpuProbe, visible_indices
from tests.support.fake_nvml import (
    GIB,
    FakeNvml,
    NVMLError,
    NVMLError_LibraryNotFound,
    NVMLError_NotSupported,
    two_gpus,
)

ME = os.getpid()  # a real process, so that its name comes from the real /proc
GONE = 2**22 + 12345  # above Linux's largest pid: no /proc entry


def probe(nvml: FakeNvml, visible: str | None = None) -> GpuProbe:
    return GpuProbe(nvml, environ={} if visible is None else {"CUDA_VISIBLE_DEVICES": visible})


def test_two_devices_with_their_memory_utilisation_and_processes():
    nvml = two_gpus((ME, 3 * GIB), (GONE, None))
    snap = probe(nvml).snapshot()
    assert (snap.available, snap.reason, snap.driver_version, snap.cuda_version) == (
        True, "", "550.54.15", "12.4"
    )
    h100, l4 = snap.devices
    assert (h100.index, h100.name, h100.uuid) == (0, "NVIDIA H100 80GB HBM3", nvml.devices[0].uuid)
    assert (h100.total, h100.used, h100.free, h100.utilization) == (80 * GIB, 20 * GIB, 60 * GIB, 37)
    me, gone = h100.processes
    with open(f"/proc/{ME}/comm") as comm:
        assert (me.pid, me.used_bytes, me.name) == (ME, 3 * GIB, comm.read().strip())
    assert (gone.pid, gone.used_bytes, gone.name) == (GONE, 0, "")  # unknown memory, no /proc
    assert (l4.index, l4.name, l4.free, l4.processes) == (1, "NVIDIA L4", 24 * GIB, [])
    assert nvml.inits == 0  # shut down again


def test_a_missing_driver_is_unavailable_with_a_one_line_reason():
    nvml = two_gpus()
    nvml.fail["nvmlInit"] = NVMLError_LibraryNotFound()
    snap = probe(nvml).snapshot()
    assert not snap.available and snap.devices == []
    assert snap.reason == "no NVIDIA driver: NVML could not start (NVML Shared Library Not Found)"


def test_the_real_pynvml_never_raises():
    snap = GpuProbe().snapshot()
    assert snap.available or ("\n" not in snap.reason and snap.reason and not snap.devices)


async def test_snapshot_async_runs_the_same_probe():
    snap = await probe(two_gpus()).snapshot_async()
    assert [d.name for d in snap.devices] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]


def test_a_failing_call_names_the_call_and_the_device_and_shuts_nvml_down():
    nvml = two_gpus()
    nvml.fail["nvmlDeviceGetMemoryInfo"] = NVMLError("GPU is lost")
    snap = probe(nvml).snapshot()
    assert not snap.available and snap.devices == []
    assert snap.reason == "NVML nvmlDeviceGetMemoryInfo for GPU 0 failed: GPU is lost"
    assert nvml.inits == 0


def test_utilisation_a_device_does_not_support_reads_as_zero():
    nvml = two_gpus()
    nvml.fail["nvmlDeviceGetUtilizationRates"] = NVMLError_NotSupported()
    snap = probe(nvml).snapshot()
    assert snap.available and [d.utilization for d in snap.devices] == [0, 0]


@pytest.mark.parametrize(
    ("visible", "names"),
    [
        ("1", ["NVIDIA L4"]),
        ("1,0", ["NVIDIA L4", "NVIDIA H100 80GB HBM3"]),
        ("GPU-22222222-aaaa-bbbb-cccc-000000000000", ["NVIDIA L4"]),
        ("GPU-1111", ["NVIDIA H100 80GB HBM3"]),  # a unique prefix, as CUDA accepts
        ("0,7,1", ["NVIDIA H100 80GB HBM3"]),  # the list ends at an entry that names no device
        (" 1 , 1 ", ["NVIDIA L4"]),
    ],
)
def test_cuda_visible_devices_limits_the_devices_by_index_or_uuid(visible, names):
    snap = probe(two_gpus(), visible).snapshot()
    assert snap.available and [d.name for d in snap.devices] == names
    # NVML's index is kept
    assert [d.index for d in snap.devices] == [0 if "H100" in n else 1 for n in names]


@pytest.mark.parametrize("visible", ["", "-1", "GPU-", "GPU-9999"])
def test_cuda_visible_devices_that_selects_nothing_is_unavailable(visible):
    snap = probe(two_gpus(), visible).snapshot()
    assert not snap.available and snap.devices == []
    assert snap.reason == f"CUDA_VISIBLE_DEVICES={visible!r} selects none of this host's 2 GPU(s)"


def test_the_environment_is_read_at_each_snapshot(monkeypatch):
    gpu = GpuProbe(two_gpus())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert len(gpu.snapshot().devices) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [d.index for d in gpu.snapshot().devices] == [1]


def test_no_devices_at_all_is_unavailable():
    snap = probe(FakeNvml([])).snapshot()
    assert (snap.available, snap.reason) == (False, "the NVIDIA driver reports no GPU")


def test_visible_indices_unset_is_every_device():
    assert visible_indices(None, ["GPU-a", "GPU-b"]) == [0, 1]
