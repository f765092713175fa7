"""ocrctl driven for real against the real control server (real Scheduler, FakeRunners).

Most tests call ``ocrctl.__main__.main(argv)`` in a worker thread (the server runs in the test's
event loop); what depends on the process itself (the entry point, exit codes without a
traceback, a terminal, Ctrl-C, dropped privileges) runs ``python -m ocrctl`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import shutil
import signal
import socket
import sys

import pytest

from ocrctl.__main__ import main
from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer
from ocrd.errors import ModelLoadFailed
from ocrd.events import Event
from ocrd.planning.gpu import GpuProbe
from tests.support.control import PPOCR, REPO, ocrctl_process, server_with_fake_gpus, settings_for

NOT_RUNNING = "ocrctl: ocrd is not running at {} (start it with 'ocrd serve' or 'systemctl start ocrd')\n"


# --- status, ps, models, load, unload -----------------------------------------------------------


async def test_status_shows_the_daemon_then_the_loaded_models(ocrctl, control):
    before = await ocrctl("status")
    assert before.rc == 0, before.err
    assert before.out.startswith("ocrd 9.8.7 (pid 4242), up 1m30s\n")
    assert "http://127.0.0.1:8000" in before.out and control.addresses[0] in before.out
    assert "no models loaded" in before.out

    assert (await ocrctl("load", "ppocr")).rc == 0
    after = await ocrctl("status")
    assert re.search(r"^MODEL\s+ENGINE\s+STATE\s+DEVICE\s+MEMORY$", after.out, re.M)
    assert re.search(r"^builtin/ppocr\s+builtin\s+ready\s+cpu\s+150 MiB$", after.out, re.M)


async def test_load_prints_one_line_per_step_when_not_on_a_terminal(ocrctl):
    result = await ocrctl("load", "ppocr", "--keep-alive", "10m")
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert "runner started  10%" in lines[1] and "loading recognizer  90%" in lines[3]
    assert "\r" not in result.out and lines[-1] == "builtin/ppocr is ready"


async def test_ps_shows_what_is_loaded_with_its_details(ocrctl):
    assert (await ocrctl("ps")).out == "no models loaded\n"
    await ocrctl("load", "ppocr", "--keep-alive", "10m")
    result = await ocrctl("ps")
    header, row = result.out.splitlines()
    assert header.split() == ["MODEL", "ENGINE", "STATE", "DEVICE", "PID", "MEMORY",
                              "IN-FLIGHT/QUEUED", "KEEP-ALIVE", "LAST", "USED"]
    assert re.fullmatch(r"builtin/ppocr\s+builtin\s+ready\s+cpu\s+\d+\s+150 MiB\s+0/0\s+10m\s+never", row)

    await ocrctl("load", "ppocr", "--pin")
    assert "  pinned  " in (await ocrctl("ps")).out


async def test_models_lists_every_model_with_aliases_and_state(ocrctl):
    result = await ocrctl("models")
    assert result.rc == 0
    assert re.search(r"^builtin/ppocr\s+ppocr\s+builtin\s+not loaded\s+apache-2.0\s+PP-OCR", result.out, re.M)
    assert result.out.splitlines()[0].split() == ["MODEL", "ALIASES", "ENGINE", "STATE", "LICENSE", "DESCRIPTION"]


async def test_models_json_carries_the_licence(ocrctl):
    listing = json.loads((await ocrctl("--json", "models")).out)
    assert {m["id"]: m["license"] for m in listing["models"]}["builtin/ppocr"] == "apache-2.0"


async def test_unload_reports_the_memory_it_freed(ocrctl):
    await ocrctl("load", "ppocr")
    assert (await ocrctl("unload", "ppocr")).out == "unloaded builtin/ppocr (freed 150 MiB)\n"
    assert (await ocrctl("unload", "ppocr")).out == "builtin/ppocr was not loaded\n"


async def test_json_output_is_machine_readable_before_or_after_the_command(ocrctl):
    load = await ocrctl("--json", "load", "ppocr")
    steps = [json.loads(line) for line in load.out.splitlines()]
    assert steps[-1]["state"] == "MODEL_STATE_READY" and steps[-1]["model"] == PPOCR

    status = json.loads((await ocrctl("status", "--json")).out)
    assert status["version"] == "9.8.7" and status["models"][0]["id"] == PPOCR
    ps = json.loads((await ocrctl("ps", "--json")).out)
    assert ps["models"][0]["memory_bytes"] == str(150 * 2**20) and ps["models"][0]["in_flight"] == 0
    models = json.loads((await ocrctl("--json", "models")).out)
    assert PPOCR in [m["id"] for m in models["models"]]
    unload = json.loads((await ocrctl("--json", "unload", "ppocr")).out)
    assert unload == {"model": PPOCR, "was_loaded": True, "freed_bytes": str(150 * 2**20)}


# --- gpu ----------------------------------------------------------------------------------------


async def test_gpu_on_this_host_prints_once_and_exits_0(ocrctl):
    result = await ocrctl("gpu")
    assert result.rc == 0 and result.err == ""
    here = GpuProbe().snapshot()
    if not here.available:  # a host without an NVIDIA driver, like CI's
        assert result.out == f"no GPU: {here.reason}\n"
    else:
        assert result.out.startswith("driver ") and result.out.count("GPU ") == len(here.devices)


async def test_gpu_shows_each_device_and_which_model_holds_its_memory(
    settings, scheduler, daemon_info, runners, capsys
):
    await scheduler.load(PPOCR)
    runner = runners.made(PPOCR)[0]
    async with server_with_fake_gpus(settings, scheduler, daemon_info, runner.fake_pid) as address:
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["--address", address, "gpu"]) == 0
        table = capsys.readouterr().out
        assert await asyncio.to_thread(main, ["--address", address, "gpu", "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
    lines = table.splitlines()
    assert lines[0] == "driver 550.54.15, CUDA 12.4"
    assert lines[2] == "GPU 0: NVIDIA H100 80GB HBM3 (GPU-11111111-aaaa-bbbb-cccc-000000000000)"
    assert lines[3] == "memory 20.0 GiB used / 80.0 GiB total, 60.0 GiB free; utilisation 37%"
    assert lines[4].split() == ["PID", "MODEL", "PROCESS", "MEMORY"]
    assert lines[5].split() == [str(runner.fake_pid), PPOCR, "-", "3.0", "GiB"]
    assert lines[6].split()[:2] == [str(os.getpid()), "other"] and lines[6].endswith("1.0 GiB")
    assert lines[8:] == [
        "GPU 1: NVIDIA L4 (GPU-22222222-aaaa-bbbb-cccc-000000000000)",
        "memory - used / 24.0 GiB total, 24.0 GiB free; utilisation 0%",
        "no processes",
    ]
    assert answer["available"] is True and answer["devices"][0]["processes"][0]["model"] == PPOCR


# --- errors -------------------------------------------------------------------------------------


async def test_failed_load_exits_1_with_the_reason_in_one_line(ocrctl, runners):
    runners.plan(PPOCR, error=ModelLoadFailed("runner exited: out of memory"))
    result = await ocrctl("load", "ppocr")
    assert result.rc == 1 and result.err == "ocrctl: runner exited: out of memory\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "nope"], "ocrctl: model 'nope' does not exist; models ocrd can serve: "),
        (["unload", "nope"], "ocrctl: model 'nope' does not exist; models ocrd can serve: "),
        (["load", "ppocr", "--mode", "vllm"], "ocrctl: builtin/ppocr cannot run on the vllm engine; "),
        (["mode", "explain", "nope"], "ocrctl: model 'nope' does not exist; models ocrd can serve: "),
        (["pull", "ppocr"], "ocrctl: builtin/ppocr is built into ocrd (builtin engine): there is nothing to download"),
        (["doctor", "--model", "nope"], "ocrctl: model 'nope' does not exist; models ocrd can serve: "),
    ],
)
async def test_daemon_errors_exit_1_with_the_daemons_message_in_one_line(ocrctl, argv, message):
    result = await ocrctl(*argv)
    assert result.rc == 1 and result.out == ""
    assert result.err.startswith(message) and result.err.count("\n") == 1


async def test_missing_socket_says_ocrd_is_not_running_without_a_traceback(socket_dir):
    address = f"unix://{socket_dir}/absent.sock"
    result = await ocrctl_process("--address", address, "status")
    assert (result.rc, result.out, result.err) == (1, "", NOT_RUNNING.format(address))

    from_env = await ocrctl_process("ps", env={**os.environ, "OCRD_ADDRESS": address})
    assert (from_env.rc, from_env.err) == (1, NOT_RUNNING.format(address))


async def test_a_stale_socket_is_reported_as_not_running(socket_dir, capsys):
    path = socket_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(os.fspath(path))
    rc = await asyncio.to_thread(main, ["--address", os.fspath(path), "models"])
    assert (rc, capsys.readouterr().err) == (1, NOT_RUNNING.format(f"unix://{path}"))


async def test_permission_denied_says_to_join_the_group_or_use_sudo(socket_dir, scheduler, daemon_info):
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root passes every permission check unless it drops its capabilities
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop capabilities")
        prefix = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--")
    settings = settings_for(socket_dir, socket_mode=0o000)
    server = await start_control_server(settings, ControlServicer(scheduler, daemon_info))
    try:
        result = await ocrctl_process("--address", server.addresses[0], "status", prefix=prefix)
    finally:
        await server.stop(None)
    assert result.rc == 1 and result.err.count("\n") == 1
    assert result.err.startswith(f"ocrctl: permission denied on {settings.grpc.socket}: join group ocrd")
    assert "or use sudo" in result.err


@pytest.mark.parametrize(
    "argv", [["load"], ["load", "ppocr", "--keep-alive", "soon"], ["bogus"], ["--timeout", "0", "ps"]]
)
async def test_usage_errors_exit_2(argv):
    result = await ocrctl_process(*argv)
    assert result.rc == 2 and "usage: ocrctl" in result.err and "Traceback" not in result.err


# --- a terminal, and following events -------------------------------------------------------------


async def test_load_on_a_terminal_redraws_one_bar_in_place(control):
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocrctl", "--address", control.addresses[0], "load", "ppocr",
        cwd=REPO, stdout=follower, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    _, err = await process.communicate()
    output = _read_all(leader).replace("\r\n", "\n")
    assert process.returncode == 0, err
    bar_line, ready_line = output.rstrip("\n").split("\n")
    assert bar_line.count("\r") >= 4  # every step redrew the same line
    assert "[" + "#" * 24 + "] 100%" in bar_line.split("\r")[-1]
    assert ready_line == "builtin/ppocr is ready"


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


async def test_events_prints_one_line_per_event_until_ctrl_c(control, scheduler):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocrctl", "--address", control.addresses[0], "events", "--model", "ppocr",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    # Daemon-wide events reach every watcher: once one is printed, ocrctl is subscribed.
    first = await _ping_until_a_line_arrives(scheduler, process)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  daemon.ping  -  -  are you there", first)
    await scheduler.load(PPOCR)
    lines: list[str] = []
    # Hang guard: a model.ready that never comes fails the test with what came instead.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            while not lines or "model.ready" not in lines[-1]:
                line = (await process.stdout.readline()).decode().rstrip("\n")
                if "daemon.ping" not in line:  # pings sent before ocrctl printed the first one
                    lines.append(line)
    if not lines or "model.ready" not in lines[-1]:
        process.kill()
        await process.wait()
        raise AssertionError(f"no model.ready from ocrctl events within 60 s; it printed: {lines}")
    process.send_signal(signal.SIGINT)
    rest, err = await process.communicate()
    assert process.returncode == 0 and b"Traceback" not in err
    assert re.search(r"  model\.loading  builtin/ppocr  loading  loading with the builtin engine$", lines[0])
    assert re.search(r"  model\.ready  builtin/ppocr  ready  ready", lines[-1])


async def _ping_until_a_line_arrives(scheduler, process) -> str:
    reading = asyncio.ensure_future(process.stdout.readline())
    for _ in range(2000):  # a bound so that a broken ocrctl fails the test instead of hanging it
        scheduler.events.publish(Event(kind="daemon.ping", message="are you there"))
        done, _ = await asyncio.wait({reading}, timeout=0.02)
        if done:
            return reading.result().decode().rstrip("\n")
    reading.cancel()
    raise AssertionError("ocrctl events printed nothing")
