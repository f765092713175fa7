"""Cleanup, for real: the gRPC ``Cleanup`` of the real control server over the real scheduler, and
``ocrctl cleanup`` against a real ``ocrd serve``, with real runner processes that no scheduler
knows (``tests.support.orphans``): one this process started as if it were the daemon, one whose
daemon is gone, one of a live "other ocrd". Docker is pointed at a socket that does not exist,
except in the test marked ``docker``, which uses the real engine under a label of its own.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ocrd.control.v1 import control_pb2 as pb
from ocrd.ops.cleanup import Cleanup
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.orphans import RunnerProcess, end_runner
from ocrd.runners.vllm.docker_host import INSTANCE_LABEL, MANAGED_LABEL, MODEL_LABEL, docker_client
from tests.support.control import PPOCR, PPOCR_MEMORY
from tests.support.daemon import pid_alive, running_daemon
from tests.support.fake_nvml import GIB, FakeDevice, FakeNvml
from tests.support.orphans import foreign_runner, orphaned_runner, own_runner
from tests.support.worker import temp_workdir

TESSERACT = "builtin/tesseract"


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, socket_dir: Path) -> str:
    host = f"unix://{socket_dir}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


@pytest.fixture
def workdir() -> Iterator[Path]:
    yield from temp_workdir("ocrdc-")


# --- models, through the real control server -----------------------------------------------------


async def test_dry_run_lists_the_idle_model_and_keeps_the_pinned_one_without_touching_either(
    stub, scheduler, runners, no_docker
):
    await scheduler.load("ppocr")
    await scheduler.load("tesseract", pin=True)
    report = await stub.Cleanup(pb.CleanupRequest(dry_run=True))
    assert list(report.unloaded_models) == [PPOCR]
    assert report.freed_bytes == PPOCR_MEMORY
    assert f"would unload {PPOCR} (idle; 150 MiB)" in report.actions
    assert f"kept {TESSERACT}: pinned" in report.actions
    assert scheduler.info(PPOCR).state.value == "ready" and not runners.made(PPOCR)[0].stopped


async def test_cleanup_unloads_the_idle_model_and_keeps_pinned_and_busy_ones(
    stub, scheduler, runners, no_docker
):
    await scheduler.load("ppocr")
    await scheduler.load("tesseract", pin=True)
    async with scheduler.acquire("ppocr"):  # a request in flight
        busy = await stub.Cleanup(pb.CleanupRequest())
    assert not busy.unloaded_models and busy.freed_bytes == 0
    assert f"kept {PPOCR}: 1 request(s) in flight" in busy.actions

    report = await stub.Cleanup(pb.CleanupRequest())
    assert list(report.unloaded_models) == [PPOCR] and report.freed_bytes == PPOCR_MEMORY
    assert f"unloaded {PPOCR} (idle; freed 150 MiB)" in report.actions
    assert runners.made(PPOCR)[0].stopped
    assert scheduler.info(PPOCR).state.value == "not_loaded"
    assert scheduler.info(TESSERACT).state.value == "ready"


async def test_containers_are_not_checked_when_docker_is_unreachable_and_the_line_says_why(
    stub, no_docker
):
    report = await stub.Cleanup(pb.CleanupRequest(dry_run=True))
    (line,) = [action for action in report.actions if action.startswith("containers")]
    assert line.startswith("containers not checked: Docker is not reachable: ")
    assert not report.removed_containers


# --- runner processes nobody's scheduler knows ----------------------------------------------------


async def test_a_runner_claiming_this_daemon_that_its_scheduler_does_not_know_is_ended(
    stub, workdir, no_docker
):
    # This test process is the daemon here: the control server, its scheduler and the runner's
    # OCRD_PARENT_PID all name it, and the scheduler has never heard of the runner.
    with own_runner(workdir) as own, foreign_runner(workdir) as foreign:
        dry = await stub.Cleanup(pb.CleanupRequest(dry_run=True))
        assert own.pid in dry.ended_pids and foreign.pid not in dry.ended_pids
        line = next(a for a in dry.actions if f"runner pid {own.pid} " in a)
        assert line.startswith(f"would end runner pid {own.pid} ({PPOCR}): started by this ocrd "
                               f"but none of its models' runner; ")
        assert dry.freed_bytes > 0  # the runner's resident memory, read before acting
        assert own.alive()

        report = await stub.Cleanup(pb.CleanupRequest())
        assert own.pid in report.ended_pids and foreign.pid not in report.ended_pids
        assert f"ended runner pid {own.pid} ({PPOCR}): " in "\n".join(report.actions)
        assert not own.alive()  # SIGTERM was enough: it is gone before the call returns
        assert foreign.alive()
        assert not any(str(foreign.pid) in action for action in report.actions)


async def test_gpu_memory_of_an_orphan_counts_in_what_it_frees(scheduler, workdir, no_docker):
    with own_runner(workdir) as own:
        nvml = FakeNvml([FakeDevice("NVIDIA L4", "GPU-1", total=24 * GIB, used=3 * GIB,
                                    processes=[(own.pid, 3 * GIB)])])
        cleanup = Cleanup(scheduler, GpuProbe(nvml, environ={}), daemon_pid=os.getpid(),
                          owned_containers=frozenset())
        report = await cleanup.run(dry_run=True)
    assert own.pid in report.ended_pids
    assert report.freed_bytes > 3 * GIB  # NVML's 3 GiB for its pid, plus its resident memory


def test_ocrctl_cleanup_ends_a_runner_whose_daemon_is_gone_and_spares_the_live_ones(workdir, no_docker):
    with running_daemon(env={"DOCKER_HOST": no_docker}) as daemon, \
            orphaned_runner(workdir) as orphan, foreign_runner(workdir) as foreign:
        assert daemon.ocrctl("load", "ppocr", "--pin").returncode == 0
        pinned = daemon.ps()[PPOCR]["pid"]

        dry = daemon.ocrctl("cleanup", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert f"kept {PPOCR}: pinned" in lines
        (line,) = [line for line in lines if f"runner pid {orphan.pid} " in line]
        assert line.startswith(f"would end runner pid {orphan.pid} ({PPOCR}): "
                               f"its ocrd (pid {orphan.claimed_parent}) is gone; ")
        assert any(line.startswith("containers not checked: Docker is not reachable") for line in lines)
        assert lines[-1].startswith("would free ") and lines[-1].endswith(" bytes)")
        assert not any(str(foreign.pid) in line or str(pinned) in line for line in lines)
        assert orphan.alive()

        as_json = json.loads(daemon.ocrctl("cleanup", "--dry-run", "--json").stdout)
        assert orphan.pid in as_json["ended_pids"] and foreign.pid not in as_json["ended_pids"]

        done = daemon.ocrctl("cleanup")
        assert done.returncode == 0, done.stderr
        # It ignores SIGTERM (that is how it outlived its daemon): SIGKILL after the grace.
        assert f"killed (it ignored SIGTERM) runner pid {orphan.pid} ({PPOCR}): " in done.stdout
        assert done.stdout.splitlines()[-1].startswith("freed ")
        assert not orphan.alive()
        assert foreign.alive() and pid_alive(pinned)
        assert daemon.ps()[PPOCR]["pid"] == pinned


def test_ocrctl_cleanup_unloads_an_idle_model_of_a_real_daemon(no_docker):
    with running_daemon(env={"DOCKER_HOST": no_docker}) as daemon:
        assert daemon.ocrctl("load", "ppocr").returncode == 0
        pid = daemon.ps()[PPOCR]["pid"]
        result = daemon.ocrctl("cleanup")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"unloaded {PPOCR} (idle; freed ")
        assert not pid_alive(pid) and PPOCR not in daemon.ps()
        again = daemon.ocrctl("cleanup").stdout.splitlines()
        assert not any(line.startswith("unloaded") for line in again)
        assert any(line.startswith("containers not checked") for line in again)


# --- ending a process safely -------------------------------------------------------------------------


def as_runner(process: subprocess.Popen) -> RunnerProcess:
    """``process`` as cleanup's scan would describe it (start time from /proc)."""
    stat = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return RunnerProcess(pid=process.pid, claimed_parent=os.getpid(), parent=os.getpid(), model="",
                         start_time=int(stat[19]), rss_bytes=0)


def test_a_reused_pid_is_never_signalled_and_the_real_process_ends_on_sigterm():
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        real = as_runner(sleeper)
        # The pid as it would be after the runner ended and another process got the number.
        reused = replace(real, start_time=real.start_time + 1)
        assert end_runner(reused, grace=1.0) == "already gone"
        assert sleeper.poll() is None
        assert end_runner(real, grace=60.0) == "terminated"
        assert sleeper.wait(timeout=60) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_ignoring_sigterm_is_killed_and_a_group_it_does_not_lead_is_not_signalled():
    # In this test process's own group: signalling the group would hit pytest as well.
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)")
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline() == "ready\n"
        assert end_runner(as_runner(stubborn), grace=0.5) == "killed"
        assert stubborn.wait(timeout=60) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()
        stubborn.stdout.close()


# --- containers, with a real Docker engine ----------------------------------------------------------


@pytest.fixture
def docker_engine():
    client = docker_client()
    if isinstance(client, str):
        pytest.skip(client)
    yield client
    client.close()


def _tiny_image(client, tag: str) -> str:
    """An image made locally from a one-file tarball (no registry is reachable)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    client.api.import_image_from_data(data.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    return tag


def _labelled(client, instance: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={instance}"})


@pytest.mark.docker
async def test_cleanup_removes_an_ocrd_container_that_no_runner_owns(scheduler, docker_engine):
    # Its own ocrd.instance label: the cleanup under test sees this container and nobody else's.
    instance = f"cleanup-test-{secrets.token_hex(4)}"
    image = _tiny_image(docker_engine, f"local/ocrd-cleanup-test:{instance}")
    labels = {MANAGED_LABEL: "1", MODEL_LABEL: "test/model", INSTANCE_LABEL: instance}
    orphan = docker_engine.containers.create(image, command=["/marker"], labels=labels)
    owned = docker_engine.containers.create(image, command=["/marker"], labels=labels)
    try:
        cleanup = Cleanup(scheduler, GpuProbe(FakeNvml(), environ={}), daemon_pid=0,
                          owned_containers=frozenset({owned.id}), instance=instance)
        dry = await cleanup.run(dry_run=True)
        assert dry.removed_containers == (orphan.id,)
        assert f"would remove container {orphan.name} ({orphan.short_id}, test/model, created): " \
               f"no runner owns it" in dry.actions
        docker_engine.containers.get(orphan.id)  # still there

        report = await cleanup.run(dry_run=False)
        assert report.removed_containers == (orphan.id,)
        assert {c.id for c in _labelled(docker_engine, instance)} == {owned.id}
    finally:
        for container in _labelled(docker_engine, instance):
            container.remove(force=True)
        docker_engine.images.remove(image, force=True)
