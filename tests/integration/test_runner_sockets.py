"""Runner sockets do not pile up in ``<runtime_dir>/runners/`` (ocrd.runners.process,
ocrd.runners.sockets), against a real ``ocrd serve`` and real sockets: a runner SIGKILLed while
the daemon serves takes its socket with it; a daemon that starts removes the stale sockets an
earlier run left; ``ocrctl cleanup`` lists (``--dry-run``) and removes one left while it runs.

Nothing but a stale socket is ever removed: not a live runner's, not one that a process has bound
but does not accept on yet (a runner still loading), not a file, not a symlink nor what it points
to. A stale socket is planted as a SIGKILLed runner leaves it: bound, then closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrd.runners import sockets as runner_sockets
from tests.support.daemon import ocr_messages, running_daemon, wait_until
from tests.support.render import char_accuracy, render_text_image
from tests.support.worker import temp_workdir

PPOCR = "builtin/ppocr"


@pytest.fixture
def workdir() -> Iterator[Path]:
    yield from temp_workdir("ocrds-")


def plant_stale_socket(path: Path) -> Path:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


@contextlib.contextmanager
def bound_socket(path: Path, *, listening: bool) -> Iterator[None]:
    """A socket this test holds at ``path``: accepting (a ready runner) or only bound (a runner
    still loading, which refuses connections)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        if listening:
            sock.listen()
        yield


def socket_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if stat.S_ISSOCK(p.lstat().st_mode))


def test_runners_killed_with_sigkill_leave_no_socket_behind():
    with running_daemon() as daemon:
        runners = daemon.runtime_dir / "runners"
        for _ in range(3):
            load = daemon.ocrctl("load", "ppocr")
            assert load.returncode == 0, load.stderr
            assert len(socket_names(runners)) == 1  # the runner's own
            os.kill(daemon.ps()[PPOCR]["pid"], signal.SIGKILL)
            wait_until(lambda: daemon.ps()[PPOCR]["state"] == "MODEL_STATE_FAILED", timeout=30,
                       message="ps showing the model FAILED")
            assert socket_names(runners) == []
        assert daemon.stop() == 0
        assert list(runners.iterdir()) == []


def test_a_starting_daemon_removes_stale_sockets_and_nothing_else(workdir):
    runtime = workdir / "run"
    runners = runtime / "runners"
    runners.mkdir(mode=0o700, parents=True)
    runtime.chmod(0o700)
    for name in ("dead-1.sock", "dead-2.sock"):
        plant_stale_socket(runners / name)
    elsewhere = plant_stale_socket(workdir / "elsewhere.sock")
    (runners / "link.sock").symlink_to(elsewhere)
    (runners / "notes.txt").write_text("not a socket")
    with bound_socket(runners / "ready.sock", listening=True), \
            bound_socket(runners / "loading.sock", listening=False), \
            running_daemon({"runtime_dir": runtime}) as daemon:
        assert sorted(p.name for p in runners.iterdir()) == [
            "link.sock", "loading.sock", "notes.txt", "ready.sock"]
        assert stat.S_ISSOCK(elsewhere.lstat().st_mode)  # the symlink was not followed
        assert f"removed 2 stale runner socket(s) from {runners}" in daemon.stderr()


def test_ocrctl_cleanup_lists_then_removes_a_stale_socket_and_spares_the_runners(workdir):
    no_docker = {"DOCKER_HOST": f"unix://{workdir}/no-docker.sock"}
    with running_daemon(env=no_docker) as daemon:
        assert daemon.ocrctl("load", "ppocr", "--pin").returncode == 0  # pinned: cleanup keeps it
        runners = daemon.runtime_dir / "runners"
        (own,) = socket_names(runners)
        stale = plant_stale_socket(runners / "stale.sock")
        line = f"stale runner socket {stale}: no process serves on it"

        dry = daemon.ocrctl("cleanup", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove {line}" in dry.stdout.splitlines()
        assert json.loads(daemon.ocrctl("cleanup", "--dry-run", "--json").stdout)[
            "removed_sockets"] == [str(stale)]
        assert socket_names(runners) == sorted([own, "stale.sock"])

        done = daemon.ocrctl("cleanup")
        assert done.returncode == 0, done.stderr
        assert f"removed {line}" in done.stdout.splitlines()
        assert socket_names(runners) == [own]
        again = daemon.ocrctl("cleanup").stdout
        assert "stale runner socket" not in again

        with daemon.http() as http:  # the runner's socket was spared: it still serves
            response = http.post("/v1/chat/completions", json={
                "model": "ppocr", "messages": ocr_messages(render_text_image(["still serving"]))})
        assert response.status_code == 200, response.text
        assert char_accuracy("still serving", response.json()["choices"][0]["message"]["content"]) >= 0.9


def test_a_runners_directory_that_is_a_symlink_is_not_swept(workdir):
    real = workdir / "real"
    real.mkdir()
    stale = plant_stale_socket(real / "dead.sock")
    (workdir / "runners").symlink_to(real)
    assert runner_sockets.stale_sockets(real) == [stale]  # the same socket, looked at directly
    assert runner_sockets.sweep(workdir / "runners") == []
    assert stale.exists()
    assert runner_sockets.sweep(workdir / "absent") == []
