"""``ocrctl doctor`` for real: the checks run inside a real ``ocrd serve`` (as its user, with its
configuration) and come back over the control socket; with no daemon, ocrctl says so and runs
them itself. Docker is pointed at a socket that does not exist, so the answers do not depend on
whether this machine runs an engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import grpc.aio
import pytest

from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.planning.gpu import GpuProbe
from tests.support.control import ocrctl_process, server_with_fake_gpus, settings_for
from tests.support.daemon import OCRCTL, REPO, daemon_env, running_daemon

CHECKS = ["nvml", "gpu-devices", "gpu-memory", "transformers", "docker", "docker-socket",
          "nvidia-runtime", "vllm-image", "hf-cache", "hf-cache-access", "hf-cache-wsl",
          "hf-cache-mount", "downloads", "state-store", "user"]
LINE = re.compile(r"^(ok   |warn |FAIL |skip ) (?P<name>[a-z-]+): \S.*$")


def parse(stdout: str) -> dict[str, tuple[str, str, str]]:
    """{check name: (label, message, fix)} from doctor's lines, which must all be well formed."""
    checks: dict[str, tuple[str, str, str]] = {}
    last = ""
    for line in stdout.splitlines():
        if line.startswith("  fix: "):
            label, message, _ = checks[last]
            checks[last] = (label, message, line.removeprefix("  fix: "))
            continue
        match = LINE.match(line)
        assert match, f"not a doctor line: {line!r}"
        last = match["name"]
        checks[last] = (line[:5].strip(), line.split(": ", 1)[1], "")
    return checks


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf-home")
    (home / "hub").mkdir()
    return home


@pytest.fixture(scope="module")
def daemon(cache_home, tmp_path_factory):
    no_docker = tmp_path_factory.mktemp("docker") / "docker.sock"
    with running_daemon({"cache": {"hub_dir": cache_home / "hub"}},
                        env={"DOCKER_HOST": f"unix://{no_docker}"}) as running:
        yield running


def test_doctor_prints_every_check_the_daemon_ran_and_exits_0_when_nothing_blocks(daemon, cache_home):
    result = daemon.ocrctl("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = parse(result.stdout)
    assert list(checks) == CHECKS
    # The daemon's own configuration, not ocrctl's environment: the checks ran in the daemon.
    assert checks["hf-cache"] == ("ok", f"{cache_home / 'hub'} (0 models)", "")
    assert checks["hf-cache-mount"][1].startswith(f"vLLM containers bind-mount {cache_home} as their HF_HOME")
    label, message, _ = checks["gpu-memory"]
    assert (label, message.split(" ", 1)[0]) == ("ok", "builtin/ppocr")
    assert checks["docker"][0] == "warn" and checks["docker"][2]  # with a fix
    assert checks["docker-socket"][1].startswith("no Docker socket at ")
    if not GpuProbe().snapshot().available:  # a host without an NVIDIA driver, like CI's
        assert checks["nvml"][0] == "warn" and "CPU" in checks["nvml"][1]
    assert all(label != "FAIL" for label, _, _ in checks.values())


def test_doctor_json_is_the_diagnose_response(daemon):
    result = daemon.ocrctl("doctor", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [check["name"] for check in answer["checks"]] == CHECKS
    assert {check["status"] for check in answer["checks"]} <= {
        "CHECK_STATUS_OK", "CHECK_STATUS_WARN", "CHECK_STATUS_SKIPPED"}


def test_a_model_that_is_not_downloaded_fails_the_memory_check_and_the_exit_status(daemon):
    result = daemon.ocrctl("doctor", "--model", "dots.ocr")
    assert result.returncode == 1, result.stdout
    label, message, fix = parse(result.stdout)["gpu-memory"]
    assert label == "FAIL" and message.startswith("dots.ocr cannot be served: ")
    assert "not downloaded" in message and "ocrctl models" in fix


def test_an_unknown_model_is_one_line_saying_what_exists(daemon):
    result = daemon.ocrctl("doctor", "--model", "no-such-model")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("ocrctl: model 'no-such-model' does not exist") and result.stderr.count("\n") == 1


def test_a_cache_path_that_is_a_file_fails_serving(tmp_path):
    blocked = tmp_path / "hub"
    blocked.write_text("not a directory")
    with running_daemon({"cache": {"hub_dir": blocked}},
                        env={"DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}) as daemon:
        result = daemon.ocrctl("doctor")
    assert result.returncode == 1
    assert parse(result.stdout)["hf-cache"] == (
        "FAIL", f"{blocked} exists but is not a directory",
        "move it away, or point cache.hub_dir (or HF_HUB_CACHE) elsewhere")


def test_without_a_daemon_doctor_says_so_and_runs_the_checks_itself(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    socket = tmp_path / "ocrd.sock"
    env = daemon_env({"HF_HUB_CACHE": str(hub), "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"})
    result = subprocess.run([OCRCTL, "--address", str(socket), "doctor"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"FAIL  daemon: ocrd is not running at unix://{socket}; the checks below "
                               f"ran in ocrctl as ")
    assert lines[1] == "  fix: start it with 'ocrd serve' or 'systemctl start ocrd'"
    checks = parse(result.stdout)
    assert list(checks) == ["daemon", *CHECKS]
    assert checks["hf-cache"] == ("ok", f"{hub} (0 models)", "")  # ocrctl's own environment


async def test_diagnose_reads_the_gpus_through_the_servicers_probe(settings, scheduler, daemon_info,
                                                                  monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    # FakeNvml: this machine has no GPU, the servicer's probe says it has two.
    async with server_with_fake_gpus(settings, scheduler, daemon_info, runner_pid=1) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            answer = await control_pb2_grpc.ControlStub(channel).Diagnose(pb.DiagnoseRequest())
    nvml = next(check for check in answer.checks if check.name == "nvml")
    assert nvml.status == pb.CHECK_STATUS_OK
    assert nvml.message.endswith("2 GPUs: NVIDIA H100 80GB HBM3, NVIDIA L4")


async def test_a_socket_this_user_may_not_open_is_the_first_failure_and_says_which_group(
    socket_dir, scheduler, daemon_info, tmp_path
):
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root passes every permission check unless it drops its capabilities
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop capabilities")
        prefix = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--")
    settings = settings_for(socket_dir, socket_mode=0o000)
    server = await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    try:
        result = await ocrctl_process("--address", server.addresses[0], "doctor", prefix=prefix, env=env)
    finally:
        await server.stop(None)
    assert result.rc == 1, result.out + result.err
    first, fix = result.out.splitlines()[:2]
    assert first.startswith(f"FAIL  daemon: this user may not talk to ocrd at {server.addresses[0]}; "
                            f"the checks below ran in ocrctl as ")
    assert fix.startswith(f"  fix: permission denied on {settings.grpc.socket}: join group ocrd")
    assert parse(result.out)["hf-cache"][1] == f"{tmp_path} (0 models)"
