"""ocrd.private_dirs: socket directories are created private, or refused in one line when another
user could swap sockets in them (issue 11). Real directories under tmp_path; the foreign owner is
made with os.chown, so those tests need root (as the suite runs in CI)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ocrd.addresses import default_state_dir
from ocrd.errors import ConfigError
from ocrd.private_dirs import ensure_private_dir, prepare_socket_dirs, prepare_state_dir

STRANGER = 54321  # a uid no test machine gives to ocrd's user
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="os.chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def refusal(path: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        ensure_private_dir(path, **{"mode": 0o700, "what": "runtime_dir", **kwargs})
    message = caught.value.message
    assert "\n" not in message and str(path) in message
    return message


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_a_new_directory_gets_exactly_its_mode_whatever_the_umask(tmp_path, umask_077):
    path = tmp_path / "a" / "b" / "ocrd"
    ensure_private_dir(path, mode=0o755, what="grpc.socket")
    assert mode_of(path) == 0o755  # mkdir alone would give 0700 under this umask
    assert os.lstat(path).st_uid == os.geteuid()


def test_an_existing_private_directory_of_ours_is_used_as_it_is(tmp_path):
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    (path / "keep").write_text("x")
    ensure_private_dir(path, mode=0o700, what="runtime_dir")
    assert mode_of(path) == 0o700 and (path / "keep").read_text() == "x"


def test_an_existing_directory_may_be_narrower_than_allowed_but_not_wider(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(0o750)  # systemd's RuntimeDirectoryMode in the packaged unit
    ensure_private_dir(path, mode=0o700, at_most=0o755, what="runtime_dir")
    assert mode_of(path) == 0o750  # checked, never changed
    message = refusal(path, mode=0o700)  # runners/: 0700 and nothing else
    assert "mode 750" in message and "could reach the sockets" in message
    assert "chmod 700" in message


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_directory_others_may_write_is_refused_even_where_0755_is_allowed(tmp_path, mode):
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(mode)
    message = refusal(path, mode=0o755, what="grpc.socket")
    assert message.startswith("grpc.socket: ")
    assert "could replace ocrd's sockets" in message and f"chmod 755 {path}" in message
    assert mode_of(path) == mode  # refused, not repaired behind the owner's back


def test_a_symlink_is_refused_even_to_a_private_directory_of_ours(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "run"
    link.symlink_to(target)
    assert "is a symbolic link" in refusal(link)


def test_a_file_in_the_way_is_refused(tmp_path):
    path = tmp_path / "run"
    path.write_text("")
    assert "is not a directory" in refusal(path)


@needs_root
def test_a_directory_another_user_owns_is_refused_though_its_mode_is_private(tmp_path):
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    os.chown(path, STRANGER, STRANGER)
    message = refusal(path)
    assert f"belongs to uid {STRANGER}" in message and "set runtime_dir to a directory" in message


@needs_root
def test_a_symlink_another_user_planted_is_refused_as_theirs(tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path)
    os.chown(link, STRANGER, STRANGER, follow_symlinks=False)
    assert f"belongs to uid {STRANGER}" in refusal(link)


def test_a_directory_root_owns_is_trusted_by_another_user(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs a directory owned by root")
    path = tmp_path / "run"
    path.mkdir(mode=0o755)
    monkeypatch.setattr(os, "geteuid", lambda: STRANGER)
    ensure_private_dir(path, mode=0o700, at_most=0o755, what="grpc.socket")


def test_the_parent_not_writable_is_one_line_saying_what_to_set(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may create directories anywhere")
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    message = refusal(parent / "run", what="grpc.socket", fix="set grpc.socket elsewhere")
    assert "cannot create the directory" in message and message.endswith("set grpc.socket elsewhere")


def test_runtime_dir_and_its_runners_folder_are_made_private(tmp_path, umask_077):
    runtime = tmp_path / "run"
    prepare_socket_dirs(runtime, runtime / "ocrd.sock")
    # Root's /run/ocrd may hold the system socket its group uses; a user's own is 0700.
    assert mode_of(runtime) == (0o755 if os.geteuid() == 0 else 0o700)
    assert mode_of(runtime / "runners") == 0o700


def test_a_control_socket_directory_elsewhere_is_made_0755_so_its_group_reaches_the_socket(
    tmp_path, umask_077
):
    prepare_socket_dirs(tmp_path / "run", tmp_path / "control" / "ocrd.sock")
    assert mode_of(tmp_path / "control") == 0o755


def test_a_control_socket_directory_others_may_write_is_refused_naming_grpc_socket(tmp_path):
    (tmp_path / "control").mkdir()
    (tmp_path / "control").chmod(0o770)
    with pytest.raises(ConfigError, match=r"^grpc.socket: the directory .*/control has mode 770.*"
                                          r"set grpc.socket to a path in a directory of your own$"):
        prepare_socket_dirs(tmp_path / "run", tmp_path / "control" / "ocrd.sock")


def test_a_runners_folder_others_may_write_stops_the_daemon_before_any_runner(tmp_path):
    runtime = tmp_path / "run"
    (runtime / "runners").mkdir(parents=True)
    (runtime / "runners").chmod(0o777)
    with pytest.raises(ConfigError, match=r"^runtime_dir: the directory .*/run/runners has mode 777"):
        prepare_socket_dirs(runtime, runtime / "ocrd.sock")


@needs_root
def test_the_tmp_fallback_taken_by_another_user_suggests_xdg_runtime_dir(monkeypatch):
    uid = STRANGER + 1  # ocrd "runs as" this uid; the directory belongs to STRANGER
    fallback = Path(f"/tmp/ocrd-{uid}")
    if os.path.lexists(fallback):
        pytest.skip(f"{fallback} exists already")
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    fallback.mkdir(mode=0o700)
    try:
        os.chown(fallback, STRANGER, STRANGER)
        with pytest.raises(ConfigError) as caught:
            prepare_socket_dirs(fallback, fallback / "ocrd.sock")
    finally:
        fallback.rmdir()
    assert caught.value.message.startswith(f"runtime_dir: {fallback} belongs to uid {STRANGER}")
    assert "set XDG_RUNTIME_DIR" in caught.value.message


# --- the state directory ---------------------------------------------------------------------


def test_the_state_dir_is_made_0700_with_its_parents(tmp_path, umask_077):
    state = tmp_path / "home" / ".local" / "state" / "ocrd"
    prepare_state_dir(state)
    assert mode_of(state) == 0o700 and list(state.iterdir()) == []  # the write check left nothing


def test_systemds_0750_state_dir_is_used_and_a_group_writable_one_refused(tmp_path):
    state = tmp_path / "ocrd"
    state.mkdir()
    state.chmod(0o750)  # StateDirectoryMode=0750 in ocrd.service
    prepare_state_dir(state)
    state.chmod(0o770)
    with pytest.raises(ConfigError) as caught:
        prepare_state_dir(state)
    message = caught.value.message
    assert message.startswith("state_dir: ") and "could replace ocrd's files (uploads, batch results)" in message
    assert "OCRD_STATE_DIR" in message and "\n" not in message


def test_a_state_dir_that_cannot_be_written_is_one_line(tmp_path):
    # Root writes whatever the modes say: the probe's own name taken by a folder stands in for a
    # read-only or full file system (the open for writing fails the same way).
    state = tmp_path / "ocrd"
    state.mkdir(mode=0o700)
    blocker = state / f".ocrd-write-check-{os.getpid()}"
    blocker.mkdir()  # the probe's own name taken by a folder: opening it for writing fails
    with pytest.raises(ConfigError) as caught:
        prepare_state_dir(state)
    assert caught.value.message.startswith(f"state_dir: ocrd cannot write in {state}: ")


@pytest.mark.parametrize(("euid", "xdg", "expected"), [
    (0, "/x/state", "/var/lib/ocrd"),
    (1000, "/x/state", "/x/state/ocrd"),
    (1000, "relative/state", "HOME/.local/state/ocrd"),  # the XDG spec: ignore a relative value
    (1000, "", "HOME/.local/state/ocrd"),
])
def test_the_default_state_dir_follows_who_runs_ocrd(monkeypatch, tmp_path, euid, xdg, expected):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", xdg)
    assert default_state_dir() == Path(expected.replace("HOME", str(tmp_path)))
