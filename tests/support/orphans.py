"""Real runner processes (``python -m ocrd.worker``, builtin/ppocr) that no scheduler knows, for
the cleanup tests: started the way ``ProcessRunner`` starts them (own process group,
``OCRD_PARENT_PID`` naming the daemon), by a parent of the test's choosing.

* ``own_runner()``: this test process is the "daemon": the runner names it and is its child.
* ``foreign_runner()``: a live parent process plays another ocrd; the runner is its child.
* ``orphaned_runner()``: the parent starts the runner and exits, so the runner names a daemon that
  is gone. ``PR_SET_PDEATHSIG`` ends a runner together with its daemon, so one that outlives it is
  one that did not act on SIGTERM (stuck in native code, a GPU driver call): the parent blocks
  SIGTERM before starting it, and the runner inherits the blocked signal.

Every helper yields a ``RunnerHandle`` once the runner is ready, and kills whatever is left at the
end. The timeouts are hang guards only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import pid_alive
from tests.support.worker import worker_env

MODEL = "builtin/ppocr"
READY_TIMEOUT = 240.0  # hang guard: rapidocr loads in seconds
OPTIONS = {"backend": "ppocr", "det_limit_side_len": 960}

_PARENT = r"""
import json, os, signal, subprocess, sys, time
mode, out_path, *argv = sys.argv[1:]
if mode == "orphan":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
with open(out_path, "wb") as out:
    runner = subprocess.Popen(argv, stdout=out, start_new_session=True,
                              env=dict(os.environ, OCRD_PARENT_PID=str(os.getpid())))
print(runner.pid, flush=True)
if mode == "orphan":
    # Gone as soon as the runner is past its start-up check of the parent.
    while runner.poll() is None and b'"event"' not in open(out_path, "rb").read():
        time.sleep(0.05)
    sys.exit(0)
runner.wait()
"""


@dataclass
class RunnerHandle:
    pid: int
    claimed_parent: int  # OCRD_PARENT_PID
    out_path: Path

    def alive(self) -> bool:
        return pid_alive(self.pid)


def runner_command(socket_path: Path) -> list[str]:
    """The command line ``ProcessRunner`` gives a builtin/ppocr runner."""
    return [sys.executable, "-m", "ocrd.worker", "--model-id", MODEL, "--engine", "builtin",
            "--socket", str(socket_path), "--options", json.dumps(OPTIONS)]


@contextlib.contextmanager
def own_runner(workdir: Path) -> Iterator[RunnerHandle]:
    out = workdir / "own.out"
    with open(out, "wb") as stdout:
        process = subprocess.Popen(
            runner_command(workdir / "own.sock"), stdout=stdout, stderr=subprocess.DEVNULL,
            start_new_session=True, env=worker_env(OCRD_PARENT_PID=str(os.getpid())),
        )
    handle = RunnerHandle(process.pid, os.getpid(), out)
    try:
        wait_ready(handle)
        yield handle
    finally:
        _kill(handle.pid)
        process.wait(timeout=READY_TIMEOUT)


@contextlib.contextmanager
def foreign_runner(workdir: Path) -> Iterator[RunnerHandle]:
    with _via_parent(workdir, "foreign") as (parent, handle):
        yield handle
        assert parent.poll() is None, "the foreign parent must outlive the test"


@contextlib.contextmanager
def orphaned_runner(workdir: Path) -> Iterator[RunnerHandle]:
    with _via_parent(workdir, "orphan") as (parent, handle):
        assert parent.wait(timeout=READY_TIMEOUT) == 0
        yield handle


@contextlib.contextmanager
def _via_parent(workdir: Path, mode: str) -> Iterator[tuple[subprocess.Popen[str], RunnerHandle]]:
    out = workdir / f"{mode}.out"
    command = [sys.executable, "-c", _PARENT, mode, str(out), *runner_command(workdir / f"{mode}.sock")]
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=worker_env())
    handle = RunnerHandle(int(parent.stdout.readline()), parent.pid, out)
    try:
        wait_ready(handle)
        yield parent, handle
    finally:
        _kill(handle.pid)
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=READY_TIMEOUT)
        parent.stdout.close()


def wait_ready(handle: RunnerHandle) -> None:
    """Until the runner's stdout says ``ready`` (fails on ``error`` or an early exit)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for line in handle.out_path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            assert event["event"] != "error", event
            if event["event"] == "ready":
                return
        assert handle.alive(), f"runner {handle.pid} exited before it was ready"
        time.sleep(0.1)
    raise AssertionError(f"runner {handle.pid} not ready within {READY_TIMEOUT:g}s")


def _kill(pid: int) -> None:
    if pid_alive(pid):  # not after it is gone: the pid could be someone else's by then
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each of these runners leads its own group
