"""A warm runner handed a model takes the title of the runner it became (``take_title``): a real
process, retitled by setproctitle, read back through /proc as ``ps`` and ``ocrctl cleanup`` read
it; its environment (the daemon it names) is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ocrd.runners.orphans import command_line, runner_processes
from ocrd.runners.warm_pool import TITLE_ROOM
from tests.support.daemon import wait_until

MODEL = "ocrd-test/a-model-id-as-long-as-the-ones-on-the-hub-get-to-be-in-practice"
ASSIGNED = ["--model-id", MODEL, "--engine", "transformers", "--socket", "/run/ocrd/runners/r1.sock",
            "--options", '{"a": 1}']
CODE = ("import time; from ocrd.worker.warm import take_title; "
        f"take_title({ASSIGNED!r}); print('titled', flush=True); time.sleep(60)")


def test_the_title_names_the_model_and_the_environment_stays(tmp_path: Path):
    env = dict(os.environ, OCRD_PARENT_PID=str(os.getpid()), SPT_NOENV="1")
    process = subprocess.Popen(
        [sys.executable, "-c", CODE, "-m", "ocrd.worker", "--warm", "--engine", "transformers",
         f"--title-room={' ' * TITLE_ROOM}"],
        env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "titled\n"
        shown = command_line(Path(f"/proc/{process.pid}/cmdline").read_bytes())
        assert shown == [sys.executable.encode(), b"-m", b"ocrd.worker", b"--model-id", MODEL.encode(),
                         b"--engine", b"transformers", b"--socket", b"/run/ocrd/runners/r1.sock"]
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert f"OCRD_PARENT_PID={os.getpid()}".encode() in environ
        found = wait_until(lambda: {p.pid: p for p in runner_processes()}.get(process.pid), timeout=10)
        assert found.model == MODEL and found.claimed_parent == os.getpid()
    finally:
        process.kill()
        process.wait()
