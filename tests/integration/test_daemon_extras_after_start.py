"""An extra installed while ocrd runs, for real: ``transformers.python`` is a venv made in a
temporary directory without torch or transformers (``python -m venv``), and the test installs
them into its site-packages while the daemon runs (package directories: all that the probe, an
import lookup in that interpreter, can tell from ``pip install``). The real ``ocrctl mode
explain`` shows what the daemon decides before and after."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocrd.planning.availability import RECHECK_MISSING_AFTER, MissingPackages
from tests.support.daemon import running_daemon

DOTS = "rednote-hilab/dots.ocr"  # engines: vllm, transformers; planned from the catalog undownloaded


class Venv:
    def __init__(self, root: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
        self.python = root / "bin" / "python"
        self.site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        assert self.site.is_dir()

    def install(self, *names: str) -> None:
        for name in names:
            (self.site / name).mkdir()
            (self.site / name / "__init__.py").write_text("")


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    return Venv(tmp_path / "venv")


def test_torch_and_transformers_installed_after_start_up_are_seen_without_a_restart(venv):
    # vLLM through the process launcher and the same venv: never available here, whatever Docker.
    config = {"transformers": {"python": str(venv.python)},
              "vllm": {"launcher": "process", "python": str(venv.python)}}
    with running_daemon(config) as daemon:
        before = daemon.ocrctl("mode", "explain", "dots.ocr")
        assert before.returncode == 1
        assert (f"transformers: torch, transformers not installed for {venv.python}; install the extra: "
                f"{venv.python} -m pip install ") in before.stderr
        assert "ocrd-vlm[" not in before.stderr

        # torch first: a missing answer is asked again once it is a few seconds old.
        venv.install("torch")
        time.sleep(RECHECK_MISSING_AFTER)
        half = daemon.ocrctl("mode", "explain", "dots.ocr")
        assert f"transformers: transformers not installed for {venv.python}" in half.stderr

        # Then transformers, and a reload (SIGHUP) asks again at once.
        venv.install("transformers")
        daemon.reload(daemon.config)
        after = daemon.ocrctl("mode", "explain", "dots.ocr")
        assert after.returncode == 0, after.stderr
        assert after.stdout.startswith(f"{DOTS}: transformers on cpu")
        assert (f"transformers installed after start-up for {venv.python}: the transformers engine is "
                f"available now") in daemon.stderr()


def test_another_interpreter_is_probed_at_most_once_per_few_seconds_while_its_packages_are_missing(
        tmp_path, venv, caplog):
    runs = tmp_path / "runs"
    python = tmp_path / "python"  # the venv's interpreter, counting its runs
    python.write_text(f"#!/bin/sh\necho run >> {runs}\nexec {venv.python} \"$@\"\n")
    python.chmod(0o755)
    now = [0.0]
    packages = MissingPackages(clock=lambda: now[0])

    def probes() -> int:
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    assert packages(str(python), ("torch", "transformers"), engine="transformers") == ("torch", "transformers")
    venv.install("torch", "transformers")
    for _ in range(5):  # every request of a listing asks: the subprocess runs once
        assert packages(str(python), ("torch", "transformers")) == ("torch", "transformers")
    assert probes() == 1
    now[0] += RECHECK_MISSING_AFTER
    with caplog.at_level(logging.INFO, logger="ocrd.planning.availability"):
        assert packages(str(python), ("torch", "transformers"), engine="transformers") == ()
    assert probes() == 2
    now[0] += 100 * RECHECK_MISSING_AFTER
    assert packages(str(python), ("torch", "transformers")) == ()  # found: kept
    assert probes() == 2
    assert caplog.messages == [f"torch, transformers installed after start-up for {python}: the "
                               f"transformers engine is available now"]


# --- Docker at start-up --------------------------------------------------------------------------

NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def start_up_lines(config: dict | None = None) -> list[str]:
    """What a daemon logged up to READY, on a host without a Docker engine."""
    with running_daemon(config, env=NO_DOCKER) as daemon:
        return daemon.stderr().splitlines()


def test_a_daemon_never_asked_for_vllm_starts_without_a_warning_about_docker():
    lines = start_up_lines()
    checked = [line for line in lines if "vLLM containers of instance" in line]
    assert len(checked) == 1 and " INFO ocrd.vllm: " in checked[0], lines
    assert checked[0].endswith("not checked: Docker is not reachable: cannot connect to "
                               "/nonexistent/docker.sock: No such file or directory")
    assert not [line for line in lines if " WARNING " in line], lines


def test_a_daemon_configured_for_vllm_warns_at_start_up_that_docker_is_missing():
    lines = start_up_lines({"planner": {"engine": "vllm"}})
    assert [line for line in lines if " WARNING ocrd.vllm: vLLM containers of instance " in line], lines
