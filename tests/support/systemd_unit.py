"""``ocrd serve`` started the way systemd starts ``ocrd.service``, without systemd.

:class:`ServiceUnit` reads a unit file as systemd does (sections of ``Key=value`` lines, keys may
repeat, ``#`` comments) and gives back what systemd would execute: ``ExecStart=``'s argv,
``Environment=`` with the specifiers expanded (``%t`` /run, ``%S`` /var/lib, ``%E`` /etc, here
mapped to directories of the test), ``WatchdogSec=`` as ``$WATCHDOG_USEC``, ``UMask=``.

:func:`start_as_unit` then does what systemd does before exec: creates ``RuntimeDirectory=`` and
``StateDirectory=``, builds the service's clean environment (systemd's default ``PATH``,
``HOME`` the service user's home, ``$RUNTIME_DIRECTORY``, ``$STATE_DIRECTORY``, ``$NOTIFY_SOCKET``
on a datagram socket the test binds, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``), applies the
umask and execs the command line. :class:`NotifyListener` records every sd_notify datagram.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import OCRD, READY_TIMEOUT, Notification

# systemd's PATH for services (src/basic/path-util.h, DEFAULT_PATH with split /usr).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where the unit says ocrd is installed; tests run the venv's ocrd in its place.
INSTALLED_OCRD = "/opt/ocrd/bin/ocrd"

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


@dataclass
class ServiceUnit:
    sections: dict[str, list[tuple[str, str]]]

    @classmethod
    def parse(cls, path: Path) -> ServiceUnit:
        sections: dict[str, list[tuple[str, str]]] = {}
        current: list[tuple[str, str]] | None = None
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
                continue
            assert current is not None, f"{path}: {raw!r} is outside any section"
            assert not line.endswith("\\"), "continuation lines are not used in ocrd.service"
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
        return cls(sections)

    def values(self, key: str, section: str = "Service") -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, key: str, section: str = "Service") -> str:
        found = self.values(key, section)
        assert len(found) == 1, f"{key}= appears {len(found)} times in [{section}]"
        return found[0]

    def exec_start(self) -> list[str]:
        return shlex.split(self.value("ExecStart"))

    def environment(self, specifiers: dict[str, str]) -> dict[str, str]:
        """``Environment=`` lines, in order, with ``%X`` specifiers expanded."""
        env: dict[str, str] = {}
        for line in self.values("Environment"):
            for assignment in shlex.split(line):
                name, equals, value = assignment.partition("=")
                assert equals, f"Environment={line!r} is not NAME=VALUE"
                env[name] = expand(value, specifiers)
        return env

    def watchdog_usec(self) -> int:
        return round(parse_timespan(self.value("WatchdogSec")) * 1_000_000)

    def umask(self) -> int:
        return int(self.value("UMask"), 8)


def expand(value: str, specifiers: dict[str, str]) -> str:
    """systemd's ``%X`` specifiers; ``%%`` is a literal ``%``. An unknown one fails the test."""
    def one(match: re.Match[str]) -> str:
        spec = match.group(0)
        if spec == "%%":
            return "%"
        assert spec in specifiers, f"specifier {spec} is not mapped for this test"
        return specifiers[spec]

    return re.sub(r"%.", one, value)


def parse_timespan(text: str) -> float:
    """``30s``, ``1min 30s``, ``500ms``, or a plain number of seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert parts, f"{text!r} is not a time span"
    return sum(float(number) * _TIME_UNITS[unit or "s"] for number, unit in parts)


@dataclass
class NotifyListener:
    """A bound ``AF_UNIX``/``SOCK_DGRAM`` socket like systemd's ``$NOTIFY_SOCKET``."""

    path: Path
    items: list[Notification] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._synced = ""
        self._reader = threading.Thread(target=self._read, daemon=True, name="notify-listener")
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                text = self._sock.recv(65536).decode("utf-8", errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                if text.startswith("X-TEST-SYNC="):
                    self._synced = text
                else:
                    self.items.append(Notification(text, time.monotonic()))
                self._cond.notify_all()

    def sync(self, timeout: float = 10.0) -> None:
        """Returns once every datagram sent before this call has been recorded (datagrams on a
        Unix socket keep their order, so a marker we send comes back after them)."""
        marker = f"X-TEST-SYNC={time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), str(self.path))
        with self._cond:
            assert self._cond.wait_for(lambda: self._synced == marker, timeout), "reader stuck"

    def count(self, line: str) -> int:
        with self._cond:
            return sum(note.has(line) for note in self.items)

    def wait_for(self, predicate: Callable[[Notification], bool], *, after: int = 0,
                 timeout: float = READY_TIMEOUT,
                 process: subprocess.Popen[Any] | None = None) -> Notification:
        """The first datagram at index >= ``after`` matching ``predicate`` (hang guard: timeout;
        gives up early once ``process`` has exited)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for note in self.items[after:]:
                    if predicate(note):
                        return note
                if time.monotonic() > deadline or (process and process.poll() is not None):
                    raise AssertionError(f"no such datagram; got {[n.text for n in self.items]}")
                self._cond.wait(0.2)

    def close(self) -> None:
        self._closing.set()
        self._reader.join(timeout=5)
        self._sock.close()


@dataclass
class UnitProcess:
    process: subprocess.Popen[bytes]
    notify: NotifyListener
    env: dict[str, str]
    runtime_dir: Path
    state_dir: Path

    @property
    def socket_path(self) -> Path:
        return Path(self.env["OCRD_GRPC__SOCKET"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"ocrd did not exit within {timeout:g}s of signal {sig}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


def start_as_unit(unit: ServiceUnit, root: Path, *, extra_env: dict[str, str] | None = None,
                  watchdog_usec: int | None = None, output: Any = None) -> UnitProcess:
    """Starts ExecStart= as systemd would for a system service whose /run, /var/lib and /etc are
    ``root``/run, ``root``/var/lib and ``root``/etc. ``extra_env``: what the test must change
    (a free port), on top of the unit's environment. ``output`` (a file or subprocess.PIPE)
    takes stdout and stderr together, as the journal does."""
    specifiers = {"%t": str(root / "run"), "%S": str(root / "var/lib"), "%E": str(root / "etc")}
    runtime_dir = Path(specifiers["%t"]) / unit.value("RuntimeDirectory")
    state_dir = Path(specifiers["%S"]) / unit.value("StateDirectory")
    runtime_dir.mkdir(parents=True, mode=int(unit.value("RuntimeDirectoryMode"), 8))
    state_dir.mkdir(parents=True, exist_ok=True, mode=int(unit.value("StateDirectoryMode"), 8))
    notify = NotifyListener(root / "notify.sock")
    env = {
        "PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(state_dir),
        "RUNTIME_DIRECTORY": str(runtime_dir), "STATE_DIRECTORY": str(state_dir),
        **unit.environment(specifiers),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(watchdog_usec or unit.watchdog_usec()),
        **(extra_env or {}),
    }
    argv = unit.exec_start()
    assert argv[0] == INSTALLED_OCRD, argv
    argv[0] = OCRD
    umask = unit.umask()

    def before_exec() -> None:
        os.umask(umask)
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGABRT must not leave a core file

    # WATCHDOG_PID is the pid systemd forked; `exec` keeps the shell's pid for ocrd.
    command = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *argv]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                               stdout=output, stderr=subprocess.STDOUT,
                               preexec_fn=before_exec, cwd="/")
    return UnitProcess(process, notify, env, runtime_dir, state_dir)
