"""packaging/systemd/ocrd.service: systemd's own tools accept it, its exposure score is no worse
than docs/systemd.md records, and ``ocrd serve`` started the way the unit starts it (its
command line, its Environment= with the specifiers expanded into a throwaway root, its umask,
$NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID) gets ready, serves, pings the watchdog from its
event loop — and stops pinging while that loop is wedged — and stops cleanly on SIGTERM.

The throwaway root is made by scripts/install-systemd --root; the unit's /opt/ocrd/bin/ocrd is
the test venv's ocrd. There is no systemd (PID 1) here: what systemd itself would do before exec
is done by tests/support/systemd_unit.py, from the unit file.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import (
    OCRD,
    assert_openai_error,
    free_port,
    ocr_messages,
    run_ocrctl,
    wait_until,
)
from tests.support.render import char_accuracy, render_text_image
from tests.support.systemd_unit import ServiceUnit, UnitProcess, start_as_unit

REPO = Path(__file__).resolve().parents[2]
UNIT_PATH = "usr/local/lib/systemd/system/ocrd.service"
DOC = REPO / "docs" / "systemd.md"
RECORDED_SCORE = re.compile(r"Exposure score: \*\*(\d+\.\d)\*\*")
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032

# In CI (scripts/test installs systemd) a missing tool fails these tests instead of skipping them.
needs_systemd_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze") and os.environ.get("CI") != "true",
    reason="systemd-analyze is not installed (Debian package systemd; scripts/test installs it)",
)


@pytest.fixture
def root() -> Iterator[Path]:
    """A throwaway root with ocrd installed as the docs say: scripts/install-systemd --root."""
    path = Path(tempfile.mkdtemp(prefix="ocrd-unit-", dir="/tmp"))
    try:
        result = subprocess.run([REPO / "scripts" / "install-systemd", "--root", path],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unit(root: Path) -> ServiceUnit:
    return ServiceUnit.parse(root / UNIT_PATH)


# --- systemd's tools --------------------------------------------------------------------------


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_installed_unit(root):
    # What verify resolves lives in the root: the units ocrd.service orders itself against (the
    # host's), the binaries ExecStart= and ExecReload= name (real ones: a copy of the venv's ocrd
    # console script at the documented path, and kill).
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True,
                    dirs_exist_ok=True)
    (root / "opt/ocrd/bin").mkdir(parents=True)
    shutil.copy2(OCRD, root / "opt/ocrd/bin/ocrd")
    (root / "usr/bin").mkdir(exist_ok=True)
    shutil.copy2(shutil.which("kill") or "/bin/kill", root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")

    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "ocrd.service"],
                            capture_output=True, text=True, timeout=120)
    # verify exits 0 on unknown keys and unparsable values too; it only warns: so no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_exposure_score_is_no_worse_than_the_one_docs_record(root):
    recorded = RECORDED_SCORE.search(DOC.read_text(encoding="utf-8"))
    assert recorded, f"{DOC} must record the score as 'Exposure score: **N.N**'"
    limit = float(recorded.group(1))
    command = ["systemd-analyze", "security", "--offline=yes", "--no-pager",
               f"--threshold={round(limit * 10)}", str(root / UNIT_PATH)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    overall = re.search(r"Overall exposure level for ocrd\.service: (\d+\.\d)", result.stdout)
    assert overall, result.stdout + result.stderr
    assert float(overall.group(1)) <= limit, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr  # --threshold agrees


def test_the_unit_keeps_what_the_daemon_relies_on(root):
    service = unit(root)
    assert service.value("Type") == "notify" and service.value("NotifyAccess") == "main"
    # ocrd drains requests and stops its runners itself: systemd signals the main process only.
    assert service.value("KillMode") == "mixed"
    assert service.value("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert service.value("Restart") == "on-failure"
    assert service.watchdog_usec() > 0
    # Control socket and cache in the directories systemd makes for the service.
    env = service.environment({"%t": "/run", "%S": "/var/lib", "%E": "/etc"})
    assert env["OCRD_GRPC__SOCKET"] == f"/run/{service.value('RuntimeDirectory')}/ocrd.sock"
    assert env["HF_HOME"].startswith(f"/var/lib/{service.value('StateDirectory')}/")


# --- ocrd serve as the unit runs it ------------------------------------------------------------


def _start(root: Path, output, **kwargs) -> UnitProcess:
    # The one variable the unit does not set: a free port, as other daemons may hold 8000 here.
    extra = {"OCRD_HTTP__PORT": str(free_port()), **kwargs.pop("extra_env", {})}
    return start_as_unit(unit(root), root, extra_env=extra, output=output, **kwargs)


def _http(daemon: UnitProcess, timeout: float = 180.0):
    import httpx

    return httpx.Client(base_url=f"http://127.0.0.1:{daemon.env['OCRD_HTTP__PORT']}",
                        timeout=timeout)


def test_serve_started_as_the_unit_starts_it_gets_ready_serves_and_stops_with_exit_0(root):
    log = (root / "journal.log").open("wb")
    daemon = _start(root, log)
    try:
        ready = daemon.notify.wait_for(lambda n: n.has("READY=1"), process=daemon.process)
        assert daemon.notify.items[0] is ready
        assert ready.fields["MAINPID"] == str(daemon.process.pid)
        # $WATCHDOG_PID names this process, so the unit's WatchdogSec= switched pings on: the
        # first one goes out as soon as it is ready.
        daemon.notify.wait_for(lambda n: n.has("WATCHDOG=1"), process=daemon.process)

        socket_info = daemon.socket_path.stat()
        assert daemon.socket_path.parent == daemon.runtime_dir
        assert stat.S_ISSOCK(socket_info.st_mode) and stat.S_IMODE(socket_info.st_mode) == 0o660
        listing = run_ocrctl("--address", str(daemon.socket_path), "cache", "ls", "--json")
        assert listing.returncode == 0, listing.stderr
        assert json.loads(listing.stdout)["cache_dir"] == str(daemon.state_dir / "huggingface/hub")

        with _http(daemon) as http:
            response = http.post("/v1/chat/completions", json={
                "model": "ppocr", "messages": ocr_messages(render_text_image(["unit started"]))})
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        assert char_accuracy("unit started", text) >= 0.9
        runners = [p for p in (daemon.runtime_dir / "runners").iterdir() if p.is_socket()]
        assert runners, "the runner's socket is not in the RuntimeDirectory"

        count = len(daemon.notify.items)
        assert daemon.stop(signal.SIGTERM) == 0
        daemon.notify.sync()
        assert any(n.has("STOPPING=1") for n in daemon.notify.items[count:])
        assert not _runner_processes(daemon), "a runner outlived ocrd"
    finally:
        daemon.close()
        log.close()


def test_watchdog_pings_stop_while_the_event_loop_is_wedged_and_resume_after(root):
    # The wedge is a real one: the journal (here a pipe we stop reading) stops taking the
    # daemon's log lines, so the event loop blocks in write(2) on its next access-log line. Pings
    # sent from another thread would go on; pings from the event loop cannot.
    daemon = _start(root, subprocess.PIPE, watchdog_usec=200_000,
                    extra_env={"OCRD_LOG_LEVEL": "debug"})  # debug: a log line per request
    journal = _Journal(daemon.process.stdout)
    try:
        daemon.notify.wait_for(lambda n: n.has("READY=1"), process=daemon.process)
        wait_until(lambda: daemon.notify.count("WATCHDOG=1") >= 3, timeout=30,
                   message="three pings")

        journal.pause()
        _wedge(daemon)
        daemon.notify.sync()
        before = daemon.notify.count("WATCHDOG=1")
        time.sleep(2.0)  # 20 ping intervals
        assert _blocked_writing_stderr(daemon.process.pid), "the loop got unstuck by itself"
        daemon.notify.sync()
        assert daemon.notify.count("WATCHDOG=1") == before, "pings went on with a wedged loop"

        journal.resume()
        wait_until(lambda: daemon.notify.count("WATCHDOG=1") >= before + 3, timeout=30,
                   message="pings after the loop got unstuck")
        with _http(daemon, timeout=30) as http:
            assert_openai_error(http.post("/v1/chat/completions", content=b"{"), 400)

        # What systemd does when WatchdogSec= runs out: SIGABRT. The unit's PYTHONFAULTHANDLER=1
        # turns it into a traceback in the journal showing where the loop was stuck.
        journal.pause()
        _wedge(daemon)
        daemon.process.send_signal(signal.SIGABRT)
        journal.resume()
        assert daemon.process.wait(timeout=60) == -signal.SIGABRT
        journal.join()
        text = journal.text()
        assert "Fatal Python error: Aborted" in text, text[-3000:]
        main_thread = text.split("Current thread", 1)[1].split("\n\n", 1)[0]
        assert "logging/__init__.py" in main_thread, main_thread
    finally:
        journal.resume()
        daemon.close()
        journal.join()


class _Journal:
    """Reads the daemon's stderr (a pipe shrunk to one page) while not paused."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, 4096)
        self._reading = threading.Event()
        self._reading.set()
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True, name="journal")
        self._thread.start()

    def _read(self) -> None:
        while True:
            self._reading.wait()
            chunk = self._pipe.read1(65536)
            if not chunk:
                return
            self._chunks.append(chunk)

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")

    def unread(self) -> int:
        count = array.array("i", [0])
        fcntl.ioctl(self._pipe.fileno(), termios.FIONREAD, count)
        return count[0]


def _wedge(daemon: UnitProcess) -> None:
    """Requests (each one logs a line) until the daemon's main thread blocks writing stderr."""
    import httpx

    with _http(daemon, timeout=2) as http:
        for _ in range(10_000):  # a one-page pipe fills after a few dozen lines
            if _blocked_writing_stderr(daemon.process.pid):
                return
            try:
                http.get("/health")
            except httpx.TimeoutException:
                pass  # the request whose log line did not fit: the loop is stuck now
    raise AssertionError("the daemon never blocked writing its stderr")


def _blocked_writing_stderr(pid: int) -> bool:
    """Whether the main thread (the event loop's) sleeps in write(2) to a full pipe."""
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    if wchan.endswith("pipe_write"):
        return True
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return fields[:2] in (["1", "0x2"], ["64", "0x2"])  # write(2, ...) on x86_64, aarch64


def _runner_processes(daemon: UnitProcess) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ocrd.worker" in cmd and str(daemon.runtime_dir) in cmd:
                found.append(int(entry.name))
    return found
