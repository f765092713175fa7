"""A real ``ocrd serve`` in a subprocess, for integration and e2e tests.

After vLLM's ``tests/utils.py: RemoteOpenAIServer``: :class:`RunningDaemon` writes a TOML config
into a short temporary directory (a free port; the control socket and the runtime directory inside
that directory), starts ``ocrd serve --config ...`` with ``$NOTIFY_SOCKET`` pointing at a datagram
socket it owns, records every sd_notify datagram in order (a reader thread), and waits for
``READY=1``. At the moment ``READY=1`` arrives the reader also tries to connect to the HTTP port and
the control socket, so tests can check that READY came only once both accept connections.

``stop()`` sends SIGTERM and returns the exit code; ``surviving_runners()`` lists any
``ocrd.worker`` process of this daemon still alive (runners are found by the runtime directory in
their command line, so one that lost its parent is found too). ``running_daemon()`` wraps it all
for fixtures and fails the teardown if a runner outlives the daemon.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OCRD = str(BIN / "ocrd") if (BIN / "ocrd").exists() else (shutil.which("ocrd") or "ocrd")
OCRCTL = str(BIN / "ocrctl") if (BIN / "ocrctl").exists() else (shutil.which("ocrctl") or "ocrctl")

READY_TIMEOUT = 60.0  # hang guard: the daemon starts in about a second
STOP_TIMEOUT = 60.0  # hang guard: drain + stopping runners
OCRCTL_TIMEOUT = 120.0  # hang guard for one ocrctl call (a load included)
HTTP_TIMEOUT = 180.0  # hang guard for one HTTP request (a model load included)

_SYNC = "X-OCRD-TEST-SYNC="  # marker datagrams the helper sends to itself
_RELOADED = "configuration reloaded from "  # ocrd's log line for an accepted reload

# Variables that would change what the daemon under test does, whatever the test configures.
_SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "OCRD_CONFIG", "OCRD_ADDRESS",
             "LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM")


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for processes under test: ours, minus ocrd/systemd settings, one thread."""
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUBBED and not (k.startswith("OCRD_") and k != "OCRD_OPENAPI_SPEC")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def to_toml(data: dict[str, Any]) -> str:
    """TOML for nested dicts of scalars, and top-level lists of flat tables such as
    ``upstreams`` (enough for ocrd's config)."""
    lines: list[str] = []
    arrays = {k: v for k, v in data.items() if isinstance(v, list)}
    data = {k: v for k, v in data.items() if k not in arrays}

    def emit(path: list[str], table: dict[str, Any]) -> None:
        tables = {k: v for k, v in table.items()  # e.g. [[http.api_keys]]
                  if isinstance(v, list) and v and all(isinstance(item, dict) for item in v)}
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and k not in tables}
        if path and scalars:
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, items in tables.items():
            for item in items:
                lines.append("[[" + ".".join(_toml_key(p) for p in [*path, key]) + "]]")
                lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items())
                lines.append("")
        for key, value in table.items():
            if isinstance(value, dict):
                emit([*path, key], value)

    emit([], data)
    for key, items in arrays.items():
        for item in items:
            lines.append(f"[[{_toml_key(key)}]]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else '"' + key + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):  # arrays of scalars (vllm.args)
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML here")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram: its ``KEY=VALUE`` lines, and when it arrived (monotonic)."""

    text: str
    at: float
    # Only for datagrams with READY=1: could we connect to (HTTP port, control socket) right then?
    probe: tuple[bool, bool] | None = None

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.splitlines() if "=" in line)

    def has(self, line: str) -> bool:
        return line in self.text.splitlines()


@dataclass
class _Notifications:
    items: list[Notification] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)


class RunningDaemon:
    """``ocrd serve`` as a subprocess with its own config, sockets and sd_notify listener."""

    def __init__(self, config: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
                 wait_ready: bool = True, flags: bool = False, host: str = "127.0.0.1",
                 prefix: Sequence[str] = ()):
        """``flags``: no config file; ``ocrd serve --port --socket --runtime-dir`` instead.

        ``prefix`` goes in front of the command (``ip netns exec NS``: another host, see
        tests/support/netns.py; it must exec, so that the process started is the daemon), and
        ``host`` is where the test reaches the daemon's port (that host's address)."""
        self.dir = Path(tempfile.mkdtemp(prefix="ocrd-", dir="/tmp"))
        self.port = free_port()
        self.socket_path = self.dir / "ocrd.sock"
        self.runtime_dir = self.dir / "run"
        self.config_path = self.dir / "ocrd.toml"
        self.stderr_path = self.dir / "stderr.log"
        self.state_dir = self.dir / "state"
        base = {
            "runtime_dir": self.runtime_dir,
            "state_dir": self.state_dir,
            "http": {"host": "127.0.0.1", "port": self.port},
            "grpc": {"socket": self.socket_path},
            # No warm runners unless a test asks (tests/integration/test_warm_runners.py): on two
            # cores, each would import torch beside the test for nothing.
            "scheduler": {"warm_runners": 0},
        }
        self.config = deep_merge(base, config or {})
        self.host = host
        self.port = int(self.config["http"]["port"])  # the config may name its own
        self.write_config(self.config)
        self._notify_path = self.dir / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        self._notify.settimeout(0.1)
        self._notes = _Notifications()
        self._closing = threading.Event()
        self._synced = ""
        self._reader = threading.Thread(target=self._read_notifications, daemon=True,
                                        name="sd-notify-reader")
        self._reader.start()
        self._stderr = self.stderr_path.open("wb")
        self.env = daemon_env({"NOTIFY_SOCKET": str(self._notify_path), **(env or {})})
        if flags:
            # No flag names the state directory: its variable keeps the test's own (not
            # /var/lib/ocrd, which root's default would be).
            self.env.setdefault("OCRD_STATE_DIR", str(self.state_dir))
            assert not config, "flags mode has no config file"
            self.config_path.unlink()
            command = [OCRD, "serve", "--port", str(self.port), "--socket", str(self.socket_path),
                       "--runtime-dir", str(self.runtime_dir)]
        else:
            command = [OCRD, "serve", "--config", str(self.config_path)]
        self.command = [*prefix, *command]
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            env=self.env, cwd=REPO,
        )
        self.exit_code: int | None = None
        if wait_ready:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()
                self.close()
                raise

    # --- addresses and clients -------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    def openai_client(self, **kwargs: Any) -> Any:
        import openai

        options = {"timeout": HTTP_TIMEOUT, "max_retries": 0, "api_key": "unused", **kwargs}
        return openai.OpenAI(base_url=self.base_url + "/v1", **options)

    def http(self, **kwargs: Any) -> Any:
        import httpx

        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", HTTP_TIMEOUT),
                            **kwargs)

    def ocrctl(self, *args: str, timeout: float = OCRCTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """The real ``ocrctl`` against this daemon's control socket."""
        return run_ocrctl("--address", str(self.socket_path), *args, timeout=timeout)

    def ps(self) -> dict[str, dict[str, Any]]:
        """``ocrctl ps --json`` as {model id: model}."""
        import json

        result = self.ocrctl("ps", "--json")
        assert result.returncode == 0, result.stderr
        return {m["id"]: m for m in json.loads(result.stdout).get("models", [])}

    # --- configuration ---------------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_config_text(to_toml(config))

    def write_config_text(self, text: str) -> None:
        # Whole file at once (rename), so a SIGHUP never reads half of it.
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(self.config_path)

    def reload(self, config: dict[str, Any]) -> None:
        """``systemctl reload``: writes ``config`` as the whole file, sends SIGHUP and returns once
        the daemon has answered it (RELOADING=1, then READY=1); fails when it rejected the file."""
        accepted = self.stderr().count(_RELOADED)
        count = len(self.notifications)
        self.config = config
        self.write_config(config)
        self.send_signal(signal.SIGHUP)
        reloading = self.wait_notification(lambda n: n.has("RELOADING=1"), after=count)
        self.wait_ready(after=count + self.notifications[count:].index(reloading) + 1)
        # Logged before READY=1 is sent.
        assert self.stderr().count(_RELOADED) == accepted + 1, self.stderr()[-3000:]

    # --- sd_notify -------------------------------------------------------------------------

    def _read_notifications(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._notify.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", errors="replace")
            if text.startswith(_SYNC):
                with self._notes.cond:
                    self._synced = text
                    self._notes.cond.notify_all()
                continue
            probe = None
            if "READY=1" in text.splitlines():
                probe = (_tcp_connectable(self.host, self.port), _unix_connectable(self.socket_path))
            with self._notes.cond:
                self._notes.items.append(Notification(text, time.monotonic(), probe))
                self._notes.cond.notify_all()

    def sync_notifications(self, timeout: float = 10.0) -> None:
        """Returns once every datagram sent so far has been read (a marker we send ourselves
        comes back after them: datagrams on a Unix socket keep their order)."""
        marker = f"{_SYNC}{time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), str(self._notify_path))
        with self._notes.cond:
            if not self._notes.cond.wait_for(lambda: self._synced == marker, timeout):
                raise AssertionError("the sd_notify reader did not catch up")

    @property
    def notifications(self) -> list[Notification]:
        with self._notes.cond:
            return list(self._notes.items)

    def lines(self) -> list[str]:
        """Every line of every datagram, in order."""
        return [line for note in self.notifications for line in note.text.splitlines()]

    def wait_notification(self, predicate: Callable[[Notification], bool], *, after: int = 0,
                          timeout: float = 30.0) -> Notification:
        """The first datagram at index >= ``after`` matching ``predicate`` (hang guard: timeout)."""
        deadline = time.monotonic() + timeout
        exited_at = 0.0
        with self._notes.cond:
            while True:
                for note in self._notes.items[after:]:
                    if predicate(note):
                        return note
                left = deadline - time.monotonic()
                if self.process.poll() is not None:
                    # No more datagrams can come once the reader has had a moment to drain.
                    exited_at = exited_at or time.monotonic()
                    left = min(left, exited_at + 1.0 - time.monotonic())
                if left <= 0:
                    raise AssertionError(
                        f"no matching sd_notify datagram within {timeout:g}s; got "
                        f"{[n.text for n in self._notes.items]}\n--- ocrd stderr ---\n{self.stderr()}"
                    )
                self._notes.cond.wait(min(left, 0.2))

    def wait_ready(self, *, after: int = 0, timeout: float = READY_TIMEOUT) -> Notification:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AssertionError):
                return self.wait_notification(lambda n: n.has("READY=1"), after=after, timeout=0.2)
            if self.process.poll() is not None:
                raise AssertionError(
                    f"ocrd exited with {self.process.returncode} before READY=1\n"
                    f"--- ocrd stderr ---\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"ocrd sent no READY=1 within {timeout:g}s\n--- ocrd stderr ---\n{self.stderr()}"
                )

    # --- processes -------------------------------------------------------------------------

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def runner_pids(self) -> list[int]:
        """Live (non-zombie) ``ocrd.worker`` children of the daemon, from /proc."""
        return [pid for pid, ppid, state, cmd in _processes()
                if ppid == self.pid and state != "Z" and "ocrd.worker" in cmd]

    def surviving_runners(self) -> list[int]:
        """Runner processes of this daemon that still exist (zombies included), wherever their
        parent is now: matched by this daemon's runtime directory in their command line."""
        marker = str(self.runtime_dir)
        return [pid for pid, _ppid, _state, cmd in _processes()
                if "ocrd.worker" in cmd and marker in cmd]

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code (hang guard: SIGKILL and fail after ``timeout``)."""
        if self.exit_code is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"ocrd did not exit within {timeout:g}s of SIGTERM\n"
                    f"--- ocrd stderr ---\n{self.stderr()}"
                ) from None
            self.sync_notifications()  # every datagram it sent is in self.notifications now
        return self.exit_code

    def kill(self) -> None:
        """Last resort: SIGKILL the daemon and whatever runners of it remain."""
        if self.process.poll() is None:
            self.process.kill()
            self.exit_code = self.process.wait()
        for pid in self.surviving_runners():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Stops the reader and removes the directory (after stop() or kill())."""
        self._closing.set()
        self._reader.join(timeout=5)
        self._notify.close()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(config: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
                   flags: bool = False) -> Iterator[RunningDaemon]:
    """A started daemon; at exit it is stopped and no runner of it may survive."""
    daemon = RunningDaemon(config, env=env, flags=flags)
    try:
        yield daemon
    finally:
        try:
            daemon.stop()
            assert_no_runner_survives(daemon)
        finally:
            daemon.kill()
            daemon.close()


def assert_no_runner_survives(daemon: RunningDaemon) -> None:
    survivors = daemon.surviving_runners()
    if survivors:
        daemon.kill()
        raise AssertionError(f"runner processes outlived ocrd: {survivors}\n{daemon.stderr()[-3000:]}")


def run_ocrctl(*args: str, timeout: float = OCRCTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCRCTL, *args], capture_output=True, text=True, timeout=timeout,
                          env=daemon_env(), cwd=REPO, stdin=subprocess.DEVNULL)


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1,
               message: str = "condition") -> Any:
    """Polls ``predicate`` until it returns something truthy (hang guard: ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not reached within {timeout:g}s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True for a process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def runner_socket(pid: int) -> Path:
    """The private Unix socket runner ``pid`` serves on: ``--socket PATH`` in its command line,
    or, for a warm runner that was handed its model, the listening socket it holds."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    if "--socket" in argv:
        return Path(argv[argv.index("--socket") + 1])
    inodes = {os.readlink(fd)[len("socket:["):-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
              if os.readlink(fd).startswith("socket:[")}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].endswith(".sock"):
            return Path(fields[7])
    raise AssertionError(f"runner {pid} serves on no socket")


def runner_info(pid: int, timeout: float = 30.0) -> dict[str, Any]:
    """``GET /v1/ocrd/info`` straight from runner ``pid`` (what it loaded, recent generations)."""
    import httpx

    transport = httpx.HTTPTransport(uds=str(runner_socket(pid)))
    with httpx.Client(transport=transport, base_url="http://runner", timeout=timeout) as client:
        response = client.get("/v1/ocrd/info")
    assert response.status_code == 200, response.text[:500]
    return response.json()


def runner_command_lines(daemon: RunningDaemon) -> dict[int, str]:
    """{pid: command line} of this daemon's runner processes that still exist (zombies included)."""
    marker = str(daemon.runtime_dir)
    return {pid: cmd for pid, _ppid, _state, cmd in _processes()
            if "ocrd.worker" in cmd and marker in cmd}


def _processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, ppid, state, command line) of every process we can see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        yield int(entry.name), int(ppid), state, cmd


def _tcp_connectable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _unix_connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


# --- request and response helpers ---------------------------------------------------------------


def ocr_messages(*pngs: bytes, text: str | None = None) -> list[dict[str, Any]]:
    """One user message with ``pngs`` as data: URLs (and an optional text part)."""
    from tests.support.render import data_url

    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": data_url(png)}} for png in pngs]
    return [{"role": "user", "content": parts}]


def assert_openai_error(response: Any, status: int) -> dict[str, Any]:
    """``response`` (httpx) has ``status`` and OpenAI's error envelope; returns the error object."""
    from tests.support.openapi import validate

    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    validate("ErrorResponse", body)
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    return error


def mapped_files(pid: int) -> set[str]:
    """The files a process has mapped (its loaded shared libraries and extension modules)."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            paths.add(fields[5])
    return paths
