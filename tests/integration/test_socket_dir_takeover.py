"""Issue 11 with real users: another user must not be able to take over ocrd's sockets.

A victim without ``$XDG_RUNTIME_DIR`` keeps its sockets in ``/tmp/ocrd-UID``. The attack: a second
user makes that directory (or its ``runners/``) first, mode 0777, and later swaps the socket. The
tests create two throwaway system users, run the real ``ocrd serve`` and ``ocrctl`` as the victim
and file operations as the attacker (``tests.support.as_user``: imported as root, then privileges
dropped), and check that ocrd refuses a planted directory in one line and that a fresh one is closed
to the attacker. They need root and useradd; elsewhere they skip and say so.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.daemon import REPO, RunningDaemon, daemon_env

START_TIMEOUT = 60.0  # hang guard: the daemon is ready in about a second
REFUSAL_TIMEOUT = 20.0  # a refusal comes before anything starts; still running by then: it served



@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, *args: str, timeout: float = START_TIMEOUT,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``tests.support.as_user`` as this user (``ocrd ...``, ``ocrctl ...``, ``try ...``)."""
        kwargs.setdefault("cwd", REPO)  # where ``tests.support`` is importable
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tests.support.as_user", str(self.uid), str(self.gid), *args]


def make_user(prefix: str) -> User:
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


@pytest.fixture
def users() -> Iterator[tuple[User, User]]:
    """(victim, attacker), deleted afterwards with the victim's /tmp/ocrd-UID."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("needs root and useradd/userdel to create throwaway users")
    made: list[User] = []
    try:
        made.append(make_user("ocrdv"))
        made.append(make_user("ocrda"))
        # A leftover of a killed run with a recycled uid is nobody's: the tests need a clean /tmp.
        shutil.rmtree(fallback_dir(made[0]), ignore_errors=True)
        yield made[0], made[1]
    finally:
        for user in made:
            shutil.rmtree(fallback_dir(user), ignore_errors=True)
            subprocess.run(["userdel", user.name], capture_output=True)


def fallback_dir(user: User) -> Path:
    return Path(f"/tmp/ocrd-{user.uid}")


@pytest.fixture
def config_file(users: tuple[User, User]) -> Iterator[Path]:
    """A configuration the victim can read (so no /etc/ocrd/ocrd.toml of the host counts) that
    only names a state directory of the victim's own: these throwaway users have no home."""
    directory = Path(tempfile.mkdtemp(prefix="ocrd-cfg-", dir="/tmp"))
    directory.chmod(0o755)
    state = directory / "state"
    state.mkdir(mode=0o700)
    os.chown(state, users[0].uid, users[0].gid)
    path = directory / "ocrd.toml"
    path.write_text(f'state_dir = "{state}"\n')
    path.chmod(0o644)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


def victim_env() -> dict[str, str]:
    return {k: v for k, v in daemon_env().items() if k != "XDG_RUNTIME_DIR"}


def serve_refused(victim: User, config_file: Path) -> str:
    """``ocrd serve`` as the victim must exit 1 with exactly one line on stderr; that line."""
    try:
        result = victim.run("ocrd", "serve", "--port", "0", "--config", str(config_file),
                            env=victim_env(), stdin=subprocess.DEVNULL, timeout=REFUSAL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:  # run() killed it
        pytest.fail(f"ocrd started in a directory the attacker controls:\n{exc.stderr!r}")
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    return lines[0]


def test_a_runtime_dir_the_attacker_made_first_is_refused_in_one_line(users, config_file):
    victim, attacker = users
    planted = fallback_dir(victim)
    assert attacker.run("mkdir", str(planted), str(planted / "runners")).returncode == 0

    line = serve_refused(victim, config_file)

    assert f"runtime_dir: {planted} belongs to {attacker.name} (uid {attacker.uid})" in line
    assert "set XDG_RUNTIME_DIR" in line
    assert os.lstat(planted).st_uid == attacker.uid  # left as it was, nothing of ours inside
    assert sorted(p.name for p in planted.iterdir()) == ["runners"]


def test_a_runners_folder_the_attacker_planted_is_refused_before_any_runner(users, config_file):
    victim, attacker = users
    runtime = fallback_dir(victim)
    # The victim's own directory, open for a while (an old ocrd under umask 000): long enough for
    # the attacker to plant runners/ mode 0777. Closed again since, so only runners/ is wrong.
    runtime.mkdir()
    os.chown(runtime, victim.uid, victim.gid)
    runtime.chmod(0o777)
    assert attacker.run("mkdir", str(runtime / "runners")).returncode == 0
    runtime.chmod(0o700)

    line = serve_refused(victim, config_file)

    assert f"runtime_dir: {runtime / 'runners'} belongs to {attacker.name}" in line
    assert not (runtime / "ocrd.sock").exists()


def test_a_fresh_fallback_is_private_serves_its_owner_and_shuts_the_attacker_out(users, config_file):
    victim, attacker = users
    runtime = fallback_dir(victim)
    serve = victim.command("ocrd", "serve", "--port", "0", "--config", str(config_file))
    with tempfile.TemporaryFile() as log:
        daemon = subprocess.Popen(serve, env=victim_env(), cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log)
        try:
            wait_serving(daemon, log)
            for path in (runtime, runtime / "runners"):
                info = os.lstat(path)
                assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (victim.uid, 0o700), path

            status = victim.run("ocrctl", "status", env=victim_env())  # the default address
            assert status.returncode == 0 and f"unix://{runtime}/ocrd.sock" in status.stdout, status

            targets = [runtime / "evil.sock", runtime / "ocrd.sock", runtime / "runners" / "evil.sock"]
            tried = attacker.run("try", *map(str, targets))
            assert json.loads(tried.stdout) == {str(t): "PermissionError" for t in targets}, tried
        finally:
            code = stop(daemon)
        assert code == 0, read(log)


def stop(daemon: subprocess.Popen[bytes]) -> int:
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        raise


def wait_serving(daemon: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "serving the OpenAI API" not in read(log):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"ocrd did not start as the victim:\n{read(log)}")
        time.sleep(0.1)


def read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


# --- any user: the control socket's own directory ---------------------------------------------


def test_a_control_socket_directory_others_may_write_is_refused_in_one_line():
    parent = Path(tempfile.mkdtemp(prefix="ocrd-open-", dir="/tmp"))
    open_dir = parent / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    daemon = RunningDaemon({"grpc": {"socket": open_dir / "ocrd.sock"}}, wait_ready=False)
    try:
        assert daemon.process.wait(timeout=START_TIMEOUT) == 1
        lines = daemon.stderr().splitlines()
        assert len(lines) == 1, lines
        assert f"grpc.socket: the directory {open_dir} has mode 777" in lines[0]
        assert not (open_dir / "ocrd.sock").exists()
    finally:
        daemon.kill()
        daemon.close()
        shutil.rmtree(parent, ignore_errors=True)


# --- any user: the state directory -------------------------------------------------------------


def test_a_state_dir_that_is_a_file_stops_the_daemon_in_one_line():
    parent = Path(tempfile.mkdtemp(prefix="ocrd-state-", dir="/tmp"))
    taken = parent / "state"
    taken.write_text("not a directory")
    daemon = RunningDaemon({"state_dir": taken}, wait_ready=False)
    try:
        assert daemon.process.wait(timeout=START_TIMEOUT) == 1
        lines = daemon.stderr().splitlines()
        assert len(lines) == 1, lines
        assert f"state_dir: {taken} exists and is not a directory" in lines[0]
        assert "OCRD_STATE_DIR" in lines[0]
    finally:
        daemon.kill()
        daemon.close()
        shutil.rmtree(parent, ignore_errors=True)
