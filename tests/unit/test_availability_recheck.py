"""An extra installed while ocrd runs: which packages ocrd's own interpreter has is asked for
real (``importlib``, a temporary directory on ``sys.path`` that a test fills later) under
made-up package names, so the torch of the test venv plays no part. Another interpreter's probe
(a subprocess) is in tests/integration/test_daemon_extras_after_start.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.planning import availability
from ocrd.planning.availability import RECHECK_MISSING_AFTER, MissingPackages, transformers_availability
from ocrd.runners.vllm.docker_host import DockerStatus

PACKAGES = ("ocrd_probe_torch", "ocrd_probe_transformers")
NO_DOCKER = DockerStatus(False, reason="Docker is not reachable: no socket")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Path:
    """An empty directory on sys.path, as a venv's site-packages before ``pip install``; the
    transformers engine's packages are named as nothing installed is; the process's answers
    start from none, on ``clock``."""
    directory = tmp_path / "site-packages"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.setattr(availability, "TRANSFORMERS_PACKAGES", PACKAGES)
    monkeypatch.setattr(availability, "_missing_packages", MissingPackages(clock=clock))
    return directory


def install(site: Path, *names: str) -> None:
    for name in names:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("")


def test_an_extra_installed_after_start_up_is_available_at_the_next_question_past_a_few_seconds(
        site, clock, caplog):
    settings = Settings()
    before = transformers_availability(settings)
    assert not before.available
    assert before.reason.startswith(f"ocrd_probe_torch, ocrd_probe_transformers not installed for "
                                    f"{sys.executable}; install the extra: {sys.executable} -m pip install ")
    install(site, *PACKAGES)
    clock.now += RECHECK_MISSING_AFTER - 0.1
    # A missing answer is reused for a few seconds: listings ask for every cached model.
    assert not transformers_availability(settings).available
    clock.now += 0.1
    with caplog.at_level(logging.INFO, logger="ocrd.planning.availability"):
        assert transformers_availability(settings).available
        assert transformers_availability(settings).available
    assert caplog.messages == ["ocrd_probe_torch, ocrd_probe_transformers installed after start-up: "
                               "the transformers engine is available now"]


def test_a_reload_asks_again_at_once_what_was_missing_and_what_was_there(site, clock):
    models = ModelDirectory(Catalog.load_default(), Settings(), docker_status=lambda: NO_DOCKER)
    install(site, PACKAGES[0])
    missing = models.availability("transformers")
    assert not missing.available and missing.reason.startswith("ocrd_probe_transformers not installed")
    install(site, PACKAGES[1])
    models.apply_settings(Settings())  # what SIGHUP does (through the scheduler)
    assert models.availability("transformers").available  # no clock moved: the reload asked
    (site / PACKAGES[1] / "__init__.py").unlink()
    (site / PACKAGES[1]).rmdir()
    clock.now += 10 * RECHECK_MISSING_AFTER
    # A package found is kept (it does not vanish from a running host in practice)...
    assert models.availability("transformers").available
    # ...until a reload asks again.
    models.apply_settings(Settings())
    assert models.availability("transformers").reason.startswith("ocrd_probe_transformers not installed")
