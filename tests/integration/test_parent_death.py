"""``ocrd.runners.parent_death``: a program started through the bootstrap keeps its pid and
command line, and dies when the process that started it is SIGKILLed. Real processes: a Python
stand-in for the daemon starts ``sleep``, then is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from ocrd.runners.parent_death import dying_with_parent
from tests.support.daemon import wait_until

SLEEP = "/bin/sleep"

# The daemon's stand-in: starts the program through the bootstrap, says its pid, then waits.
STAND_IN = textwrap.dedent("""
    import subprocess, sys, time
    from ocrd.runners.parent_death import dying_with_parent
    child = subprocess.Popen(dying_with_parent([sys.argv[1], "600"], sys.executable))
    print(child.pid, flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as raw:
        return raw.read().decode().split("\0")[:-1]


def test_the_program_keeps_its_pid_and_command_line():
    child = subprocess.Popen(dying_with_parent([SLEEP, "600"], sys.executable))
    try:
        # The bootstrap execs the program in place: same pid, the program's own argv.
        assert wait_until(lambda: cmdline(child.pid) == [SLEEP, "600"], timeout=30)
    finally:
        child.kill()
        child.wait()


def test_the_program_dies_with_the_process_that_started_it():
    stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN, SLEEP], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(stand_in.stdout.readline())
        assert wait_until(lambda: cmdline(pid) == [SLEEP, "600"], timeout=30)
        os.kill(stand_in.pid, signal.SIGKILL)
        stand_in.wait()
        assert wait_until(lambda: not alive(pid), timeout=30), "the program outlived its parent"
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_parent_that_died_before_the_signal_was_armed_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    # The pid given is not the parent's (as when the daemon died between fork and prctl).
    command = dying_with_parent(["/usr/bin/touch", str(marker)], sys.executable, parent=os.getpid() + 1_000_000)
    assert subprocess.run(command, timeout=60).returncode == 1
    assert not marker.exists()
