"""Runner processes found through ``/proc``, whichever daemon started them, and how to end one.

A runner is a ``python -m ocrd.worker`` process whose environment names the daemon that started
it (``OCRD_PARENT_PID``, set by ``ocrd.runners.process.ProcessRunner``). While that daemon lives,
it is the runner's parent; once it dies the kernel hands the runner to init (or a subreaper), so
"its parent is no longer the daemon it names" means its daemon is gone, even if the pid has
been reused since. Runners without that variable (started by hand or by tests) belong to nobody
we can name and are never listed; nor are other users' processes.

Ending a runner sends SIGTERM to its process group (runners lead their own, so helpers such as
tesseract go too), waits a grace period and then sends SIGKILL. The process is recognised by its
start time before every signal, so a pid reused in between is never hit. Everything here blocks
(``/proc`` reads, the grace period): the daemon calls it from a worker thread.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PARENT_VARIABLE = "OCRD_PARENT_PID"
WORKER_MODULE = "ocrd.worker"
POLL_INTERVAL = 0.05  # seconds between looks at a process that was asked to end
KILL_WAIT = 5.0  # after SIGKILL the kernel needs moments, not seconds; a bound all the same


@dataclass(frozen=True)
class RunnerProcess:
    pid: int
    claimed_parent: int  # OCRD_PARENT_PID: the daemon that started it
    parent: int  # its parent now
    model: str  # --model-id
    start_time: int  # clock ticks after boot (/proc/<pid>/stat field 22): who this pid is
    rss_bytes: int

    @property
    def daemon_gone(self) -> bool:
        """Its daemon died: the runner was reparented (to init or a subreaper)."""
        return self.parent != self.claimed_parent


def runner_processes(proc_root: Path = Path("/proc"), uid: int | None = None) -> list[RunnerProcess]:
    """Every live runner of user ``uid`` (default: ours) that names the daemon that started it."""
    uid = os.getuid() if uid is None else uid
    found = []
    for entry in _pid_dirs(proc_root):
        process = _read_runner(entry, uid)
        if process is not None:
            found.append(process)
    return sorted(found, key=lambda p: p.pid)


def _pid_dirs(proc_root: Path) -> Iterator[Path]:
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return
    yield from (entry for entry in entries if entry.name.isdigit())


def _read_runner(entry: Path, uid: int) -> RunnerProcess | None:
    # Any read may fail: the process can end while we look, or belong to someone else.
    try:
        argv = command_line((entry / "cmdline").read_bytes())
        if not _is_worker(argv):
            return None
        status = _status_fields(entry)
        if int(status.get("Uid", "-1").split()[0]) != uid or status.get("State", "Z").startswith("Z"):
            return None
        claimed = _environ(entry).get(PARENT_VARIABLE, "")
        start_time = _start_time(entry)
    except (OSError, ValueError):
        return None
    if not claimed.isdigit():
        return None
    return RunnerProcess(
        pid=int(entry.name),
        claimed_parent=int(claimed),
        parent=int(status.get("PPid", "0")),
        model=_argument(argv, b"--model-id"),
        start_time=start_time,
        rss_bytes=_rss(status),
    )


def command_line(raw: bytes) -> list[bytes]:
    """A process's arguments from ``/proc/PID/cmdline``. A process that retitled itself (a warm
    runner handed a model: ``ocrd.worker.warm.take_title``) has one string there, its words
    separated by spaces, then the NULs that fill the rest of the room."""
    argv = raw.rstrip(b"\0").split(b"\0")
    return argv[0].split(b" ") if len(argv) == 1 else argv


def _is_worker(argv: list[bytes]) -> bool:
    return any(arg == b"-m" and following == WORKER_MODULE.encode()
               for arg, following in itertools.pairwise(argv))


def _argument(argv: list[bytes], flag: bytes) -> str:
    try:
        return argv[argv.index(flag) + 1].decode(errors="replace")
    except (ValueError, IndexError):
        return ""


def _status_fields(entry: Path) -> dict[str, str]:
    fields = {}
    for line in (entry / "status").read_text(encoding="ascii", errors="replace").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _environ(entry: Path) -> dict[str, str]:
    variables = {}
    for item in (entry / "environ").read_bytes().split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            variables[key.decode(errors="replace")] = value.decode(errors="replace")
    return variables


def _start_time(entry: Path) -> int:
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = (entry / "stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line


def _rss(status: dict[str, str]) -> int:
    value = status.get("VmRSS", "")  # e.g. "123456 kB"; absent for kernel threads
    return int(value.split()[0]) * 1024 if value else 0


# --- ending a runner ------------------------------------------------------------------------------


def is_running(process: RunnerProcess, proc_root: Path = Path("/proc")) -> bool:
    """The same process (same start time) still exists and is not a zombie."""
    entry = proc_root / str(process.pid)
    try:
        state = (entry / "stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()[0]
        return state != "Z" and _start_time(entry) == process.start_time
    except (OSError, ValueError, IndexError):
        return False


def end_runner(process: RunnerProcess, grace: float, proc_root: Path = Path("/proc")) -> str:
    """SIGTERM to the runner's process group, SIGKILL after ``grace`` seconds.

    Returns how it ended: ``"terminated"`` (after SIGTERM), ``"killed"`` (SIGKILL was needed),
    ``"already gone"``, or ``"still running"`` (it survived SIGKILL for KILL_WAIT seconds: stuck
    in the kernel, e.g. on a GPU driver call).
    """
    if not _signal(process, signal.SIGTERM, proc_root):
        return "already gone"
    if _wait_gone(process, grace, proc_root):
        return "terminated"
    if not _signal(process, signal.SIGKILL, proc_root):
        return "terminated"
    return "killed" if _wait_gone(process, KILL_WAIT, proc_root) else "still running"


def _signal(process: RunnerProcess, sig: signal.Signals, proc_root: Path) -> bool:
    """Signals the runner (its group when it leads one); False when it is gone already."""
    if not is_running(process, proc_root):
        return False
    try:
        # Only a group the runner leads: another group could be the daemon's own.
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(process: RunnerProcess, timeout: float, proc_root: Path) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(process, proc_root):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True
