"""Session-wide fixtures shared by every test directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ocrd.config.loading as config_loading

# Fixture modules (the control plane over the real scheduler, Docker, a local registry, real
# vLLM): every test can ask for their fixtures by name.
pytest_plugins = [
    "tests.support.control",
    "tests.support.docker_engine",
    "tests.support.real_vllm",
    "tests.support.registry",
]


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory):
    """Tiny random-weight VLMs of every kind in a real HF cache, built once per session (~3 s).

    Yields a ``tests.support.tiny_models.TinyHub``; point runners at it with ``HF_HOME=hf_home``
    (or ``HF_HUB_CACHE=hub_dir``) and ``HF_HUB_OFFLINE=1``. Read-only: tests that damage a model
    build their own with ``build_tiny_model`` in ``tmp_path``.
    """
    # Imported here: it pulls in torch and transformers, which most tests never need.
    from tests.support.tiny_models import TinyHub, build_tiny_hub

    hf_home = tmp_path_factory.mktemp("hf-home")
    hub_dir = hf_home / "hub"
    return TinyHub(hf_home=hf_home, hub_dir=hub_dir, models=build_tiny_hub(hub_dir))


@pytest.fixture
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OCRD_* variable of the host reaches a test, and no /etc/ocrd/ocrd.toml either.

    Not autouse: a module opts in with ``pytestmark = pytest.mark.usefixtures("isolated_config")``.
    """
    for name in list(os.environ):
        if name.upper().startswith("OCRD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config_loading, "DEFAULT_CONFIG_PATH", tmp_path / "etc" / "ocrd.toml")
