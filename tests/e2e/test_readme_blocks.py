"""README.md as a new user follows it: every block marked ``<!-- run -->`` run as written, in order,
each from the state the blocks before it left (tests/support/readme_blocks.py says how blocks are
marked), and every ``<!-- output -->`` block compared with what really came out.

Where: a copy of the repository's files (``git ls-files``: what a fresh clone has) in a directory of
its own, with its own ``$HOME`` and ``$XDG_RUNTIME_DIR``, and a plain ``PATH`` (the system's
``python3``, not this test's venv). As root, the blocks run as ``nobody``: the README is written for
a user, and root's defaults differ (``/run/ocrd``, ``/var/lib/ocrd``).

What differs from a user's machine, and why: pip installs from a wheelhouse this test fills first
from the versions in ``constraints/test.txt`` (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``, as a pip.conf
pointing at a mirror would), so that the run does not depend on the network or on a release made
yesterday; the commands are the README's own. The daemon the quick start leaves running takes
port 8000, as written: the test fails at once, saying so, when something else holds it.
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
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import REPO, daemon_env
from tests.support.readme_blocks import Block, blocks

pytestmark = pytest.mark.slow

README = REPO / "README.md"
NOBODY = 65534
BLOCK_TIMEOUT = 600.0  # hang guard for one block (the quick start's pip install included)
# What the README's blocks install with pip, besides the checkout itself: the build backend and the
# clients its examples use.
WHEELHOUSE_EXTRAS = ("hatchling", "openai", "mistralai")
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


@contextlib.contextmanager
def user_copy() -> Iterator[tuple[Path, list[str]]]:
    """A fresh copy of the repository and the command prefix that runs as its user."""
    base = Path(tempfile.mkdtemp(prefix="ocrd-readme-", dir="/tmp"))
    try:
        clone = base / "ocrd"
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():  # a file deleted in the work tree but not yet in git: gone
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, clone / name)
        for directory in ("home", "run", "wheels"):
            (base / directory).mkdir(mode=0o700)
        prefix: list[str] = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
            prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        yield clone, prefix
    finally:
        shutil.rmtree(base, ignore_errors=True)


def fill_wheelhouse(clone: Path) -> None:
    wheels = clone.parent / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), "-c",
         str(REPO / "constraints" / "test.txt"), str(clone), *WHEELHOUSE_EXTRAS],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"could not fill the wheelhouse:\n{result.stderr[-3000:]}"
    shutil.rmtree(clone / "build", ignore_errors=True)  # what building the wheel left in the copy
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(wheels)], check=True)


def user_env(clone: Path) -> dict[str, str]:
    base = clone.parent
    env = daemon_env({
        "HOME": str(base / "home"),
        "XDG_RUNTIME_DIR": str(base / "run"),
        "PATH": USER_PATH if os.geteuid() == 0 else _without_venvs(os.environ.get("PATH", USER_PATH)),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(base / "wheels"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "HF_HOME", "HF_HUB_CACHE", "XDG_STATE_HOME",
                 "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "USER", "LOGNAME"):
        env.pop(name, None)
    return env


def _without_venvs(path: str) -> str:
    return os.pathsep.join(entry for entry in path.split(os.pathsep)
                           if not (Path(entry).parent / "pyvenv.cfg").exists())


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def same_text(expected: str, actual: str) -> bool:
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]
    return lines(expected) == lines(actual)


class Runner:
    def __init__(self, clone: Path, prefix: list[str]):
        self.clone, self.prefix, self.env = clone, prefix, user_env(clone)
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []

    def command(self, block: Block) -> tuple[list[str], str | None]:
        if block.directive == "run: python":
            return [*self.prefix, ".venv/bin/python", "-"], block.body
        return [*self.prefix, "bash", "-e", "-o", "pipefail", "-c", block.body], None

    def run(self, block: Block) -> str:
        command, stdin = self.command(block)
        started = time.monotonic()
        try:
            result = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=self.clone,
                                    env=self.env, timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.where()} ran past {BLOCK_TIMEOUT:g}s:\n{block.body}\n{self.logs()}")
        print(f"{block.where()}: exit {result.returncode} in {time.monotonic() - started:.1f}s")
        assert result.returncode == 0, (
            f"{block.where()} failed as written (exit {result.returncode}):\n{block.body}\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}\n{self.logs()}")
        return result.stdout

    def start(self, block: Block) -> None:
        url = block.background_url
        port = httpx.URL(url).port
        assert port is None or port_free(port), (
            f"{block.where()} starts a daemon on port {port}, which something else on this machine "
            f"holds: stop it and run the test again")
        log = self.clone.parent / f"background-{len(self.background)}.log"
        command, _ = self.command(block)
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                       cwd=self.clone, env=self.env, start_new_session=True)
        self.background.append((block, process, log))
        started = time.monotonic()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            assert process.poll() is None, f"{block.where()} exited with {process.returncode}:\n{self.logs()}"
            if time.monotonic() - started > BLOCK_TIMEOUT:
                pytest.fail(f"{block.where()}: {url} did not answer within {BLOCK_TIMEOUT:g}s\n{self.logs()}")
            time.sleep(0.2)
        print(f"{block.where()}: {url} answered after {time.monotonic() - started:.1f}s")

    def logs(self) -> str:
        return "\n".join(f"--- {block.where()} (background) ---\n{log.read_text(errors='replace')[-3000:]}"
                         for block, _process, log in self.background)

    def stop(self) -> None:
        """SIGTERM to each background block's process group (the daemon drains and exits 0)."""
        for block, process, _log in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    raise AssertionError(
                        f"{block.where()} did not stop within 60 s of SIGTERM\n{self.logs()}") from None
            assert process.returncode == 0, f"{block.where()} exited {process.returncode}\n{self.logs()}"


def test_the_readme_runs_as_written():
    found = blocks(README)
    assert sum(block.runs for block in found) >= 10, "the README's blocks are not marked any more"
    with user_copy() as (clone, prefix):
        fill_wheelhouse(clone)
        runner = Runner(clone, prefix)
        try:
            last_output: str | None = None
            for block in found:
                if block.is_output:
                    assert last_output is not None
                    assert same_text(block.body, last_output), (
                        f"{block.where()} says the block before prints\n{block.body}\nbut it printed\n"
                        f"{last_output}")
                elif block.background_url:
                    runner.start(block)
                    last_output = None
                elif block.runs:
                    last_output = runner.run(block)
        finally:
            runner.stop()
