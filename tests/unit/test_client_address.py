"""Where ocrctl looks for the daemon when given no address: the user's own ``ocrd serve``
first, then the system service's socket (for members of the group ``ocrd``). Real files in
tmp_path stand for the sockets; only the effective uid is patched, to be a non-root user."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrd import addresses as address


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A non-root user with a runtime directory; returns the system socket's path (absent)."""
    monkeypatch.setattr(address.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "user"))
    monkeypatch.delenv(address.ENV_ADDRESS, raising=False)
    (tmp_path / "user" / "ocrd").mkdir(parents=True)
    (tmp_path / "run" / "ocrd").mkdir(parents=True)
    return tmp_path / "run" / "ocrd" / "ocrd.sock"


def test_the_users_own_daemon_wins(user: Path, tmp_path: Path):
    own = tmp_path / "user" / "ocrd" / "ocrd.sock"
    own.touch()
    user.touch()
    assert address.client_socket_path(user) == own


def test_a_group_member_reaches_the_system_service(user: Path):
    user.touch()
    assert address.client_socket_path(user) == user


def test_with_neither_the_error_names_the_users_own_path(user: Path, tmp_path: Path):
    assert address.client_socket_path(user) == tmp_path / "user" / "ocrd" / "ocrd.sock"


def test_ocrd_address_overrides_both(user: Path, monkeypatch: pytest.MonkeyPatch):
    user.touch()
    monkeypatch.setenv(address.ENV_ADDRESS, "gpu1.example:50051")
    assert address.default_address() == "gpu1.example:50051"
    monkeypatch.delenv(address.ENV_ADDRESS)
    monkeypatch.setattr(address, "SYSTEM_SOCKET", user)
    assert address.default_address() == f"unix://{user}"


def test_root_uses_the_system_socket(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(address.os, "geteuid", lambda: 0)
    assert address.client_socket_path() == address.SYSTEM_SOCKET
