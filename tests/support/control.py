"""Fixtures for control-plane tests: the REAL Scheduler (with FakeRunners) behind the REAL gRPC
server on a Unix socket in a short temporary directory.

Registered for every test in tests/conftest.py (pytest_plugins): ask for a fixture by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest

from ocrctl.__main__ import main
from ocrd.cache.pull import Puller
from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.control.server import ControlServer, start_control_server
from ocrd.control.service import ControlServicer, DaemonInfo
from ocrd.control.v1 import control_pb2_grpc
from ocrd.core.scheduler import Scheduler
from ocrd.events import EventBus
from ocrd.runners.base import LoadProgress
from tests.support.fake_runner import FakeRunnerFactory

REPO = Path(__file__).resolve().parents[2]
PPOCR = "builtin/ppocr"
PPOCR_MEMORY = 150 * 2**20
STARTED_AT = 1_700_000_000.0  # the daemon's start, and the servicer's fixed clock after it
UPTIME = 90.0
STEPS = (
    LoadProgress("runner started", 0.1, "runner process started"),
    LoadProgress("loading detector", 0.5, "loading the text detector"),
    LoadProgress("loading recognizer", 0.9, "loading the text recognizer"),
)


def settings_for(directory: Path, **grpc: object) -> Settings:
    # A parent directory that does not exist yet: the server must create it.
    return Settings(grpc={"socket": directory / "run" / "ocrd.sock", **grpc}, runtime_dir=directory)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: Unix socket paths must fit in 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="ocrd-t-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def settings(socket_dir: Path) -> Settings:
    return settings_for(socket_dir)


@pytest.fixture
def runners() -> FakeRunnerFactory:
    factory = FakeRunnerFactory()
    factory.plan(PPOCR, progress=STEPS, memory_bytes=PPOCR_MEMORY)
    return factory


@pytest.fixture
async def scheduler(settings: Settings, runners: FakeRunnerFactory) -> AsyncIterator[Scheduler]:
    scheduler = Scheduler(settings, Catalog.load_default(), runners, EventBus())
    yield scheduler
    await scheduler.shutdown()


@pytest.fixture
def daemon_info() -> DaemonInfo:
    return DaemonInfo(
        version="9.8.7", pid=4242, started_at=STARTED_AT, http_url="http://127.0.0.1:8000",
        default_model=PPOCR,
    )


@pytest.fixture
def downloads() -> Puller:
    """The control plane's downloads (``ocrctl pull``), as the daemon hands it its one Puller."""
    return Puller()


@pytest.fixture
async def control(
    settings: Settings, scheduler: Scheduler, daemon_info: DaemonInfo, downloads: Puller
) -> AsyncIterator[ControlServer]:
    servicer = ControlServicer(scheduler, daemon_info, clock=lambda: STARTED_AT + UPTIME,
                               downloads=downloads)
    server = await start_control_server(settings, servicer)
    daemon_info.grpc_addresses = list(server.addresses)  # as the daemon does once bound
    yield server
    await server.stop(None)


@pytest.fixture
async def channel(control: ControlServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(control.addresses[0]) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> control_pb2_grpc.ControlStub:
    return control_pb2_grpc.ControlStub(channel)


# --- ocrctl ---------------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    out: str
    err: str


@pytest.fixture
def ocrctl(control: ControlServer, capsys: pytest.CaptureFixture[str]):
    """Runs ``ocrctl --address <the test server> ARGV...`` in a worker thread (the server lives
    in the test's event loop, ocrctl's sync gRPC would block it)."""

    async def run(*argv: str) -> Result:
        capsys.readouterr()
        rc = await asyncio.to_thread(main, ["--address", control.addresses[0], *argv])
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return run


async def ocrctl_process(*argv: str, prefix: tuple[str, ...] = (), **options: object) -> Result:
    """``python -m ocrctl ARGV...`` as its own process (``prefix``: e.g. a privilege dropper)."""
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "ocrctl", *argv, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **options,
    )
    out, err = await process.communicate()
    return Result(process.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def server_with_fake_gpus(settings, scheduler, daemon_info, runner_pid: int) -> AsyncIterator[str]:
    """A control server whose GPU probe reads FakeNvml: two GPUs, the given runner holding 3 GiB
    on the first and this test process 1 GiB. Yields the server's address."""
    import os

    from ocrd.planning.gpu import GpuProbe
    from tests.support.fake_nvml import two_gpus

    gib = 2**30
    nvml = two_gpus((runner_pid, 3 * gib), (os.getpid(), gib))
    servicer = ControlServicer(scheduler, daemon_info, gpu=GpuProbe(nvml, environ={}))
    server = await start_control_server(settings, servicer)
    try:
        yield server.addresses[0]
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def planning_server(
    socket_dir: Path, hub: Path, nvml, **settings: object
) -> AsyncIterator[tuple[str, Scheduler]]:
    """A control server over a Scheduler that plans with ``nvml`` (a FakeNvml) as its GPUs and
    ``hub`` as the Hugging Face cache. Yields the server's address and the scheduler."""
    from ocrd.planning.gpu import GpuProbe

    config = Settings(grpc={"socket": socket_dir / "run" / "ocrd.sock"}, runtime_dir=socket_dir,
                      cache={"hub_dir": hub}, **settings)
    probe = GpuProbe(nvml, environ={})
    scheduler = Scheduler(config, Catalog.load_default(), FakeRunnerFactory(gpus=nvml), EventBus(),
                          gpu_probe=probe)
    info = DaemonInfo(version="9.8.7", pid=4242, started_at=STARTED_AT)
    server = await start_control_server(config, ControlServicer(scheduler, info, gpu=probe))
    try:
        yield server.addresses[0], scheduler
    finally:
        await server.stop(None)
        await scheduler.shutdown()
