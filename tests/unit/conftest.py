"""Fixtures shared by unit-test modules that opt in to them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ocrd.config.loading as config


@pytest.fixture
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OCRD_* variable of the host reaches a test, and no /etc/ocrd/ocrd.toml either.

    Not autouse: a module opts in with ``pytestmark = pytest.mark.usefixtures("isolated_config")``.
    """
    for name in list(os.environ):
        if name.upper().startswith("OCRD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "etc" / "ocrd.toml")
