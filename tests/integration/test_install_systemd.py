"""scripts/install-systemd into a throwaway root: what it places (files, modes, contents), that it
never overwrites a config, what --uninstall removes and keeps, and that the placed sysusers.d and
tmpfiles.d files make the real user, groups and directories (systemd-sysusers and
systemd-tmpfiles run on that root, as the live install runs them on /).

When the tests run as root, the script runs as ``nobody``: staging files must not need root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-systemd"
PACKAGING = REPO / "packaging"
NOBODY = 65534

UNIT = "usr/local/lib/systemd/system/ocrd.service"
SYSUSERS = "usr/local/lib/sysusers.d/ocrd.conf"
TMPFILES = "usr/local/lib/tmpfiles.d/ocrd.conf"
CONFIG = "etc/ocrd/ocrd.toml"
PLACED = {
    UNIT: (PACKAGING / "systemd/ocrd.service", 0o644),
    SYSUSERS: (PACKAGING / "systemd/ocrd.sysusers", 0o644),
    TMPFILES: (PACKAGING / "systemd/ocrd.tmpfiles", 0o644),
    CONFIG: (PACKAGING / "ocrd.toml", 0o640),
}


@pytest.fixture
def root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700, and the script may run as nobody.
    path = Path(tempfile.mkdtemp(prefix="ocrd-root-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def install(*args: str, env: dict[str, str] | None = None,
            as_nobody: bool = True) -> subprocess.CompletedProcess[str]:
    """The script as an unprivileged user (nobody when we are root)."""
    command = [str(SCRIPT), *args]
    if as_nobody and os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    environ = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=60,
                          stdin=subprocess.DEVNULL)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_places_unit_sysusers_tmpfiles_and_config_under_root_without_root(root):
    result = install("--root", str(root))
    assert result.returncode == 0, result.stderr
    for relative, (source, expected_mode) in PLACED.items():
        placed = root / relative
        assert placed.read_bytes() == source.read_bytes(), relative
        assert mode(placed) == expected_mode, (relative, oct(mode(placed)))
        assert f"placed /{relative}" in result.stdout
    assert mode(root / "etc/ocrd") == 0o750
    # Staged, so nothing ran on this system: the output says what the target system must run.
    assert "systemd-sysusers ocrd.conf && systemd-tmpfiles --create ocrd.conf" in result.stdout


def test_destdir_works_like_root(root):
    result = install(env={"DESTDIR": str(root)})
    assert result.returncode == 0, result.stderr
    assert (root / UNIT).read_bytes() == PLACED[UNIT][0].read_bytes()


def test_install_never_overwrites_an_existing_config(root):
    config = root / CONFIG
    config.parent.mkdir(parents=True)
    config.write_text('[http]\nport = 9999\n')
    if os.geteuid() == 0:
        os.chown(config.parent, NOBODY, NOBODY)
        os.chown(config, NOBODY, NOBODY)
    result = install("--root", str(root))
    assert result.returncode == 0, result.stderr
    assert config.read_text() == '[http]\nport = 9999\n'
    assert "kept /etc/ocrd/ocrd.toml" in result.stdout
    assert (root / UNIT).exists()


def test_uninstall_removes_what_it_placed_and_keeps_config_and_cache_unless_purged(root):
    assert install("--root", str(root)).returncode == 0
    cache_file = root / "var/lib/ocrd/huggingface/hub/version.txt"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("1")

    result = install("--uninstall", "--root", str(root))
    assert result.returncode == 0, result.stderr
    for relative in (UNIT, SYSUSERS, TMPFILES):
        assert not (root / relative).exists(), relative
        assert f"removed /{relative}" in result.stdout
    assert (root / CONFIG).read_bytes() == PLACED[CONFIG][0].read_bytes()
    assert "kept /etc/ocrd/ocrd.toml (--purge removes it)" in result.stdout
    assert cache_file.read_text() == "1"

    result = install("--uninstall", "--purge", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert not (root / CONFIG).exists() and not (root / "etc/ocrd").exists()
    assert cache_file.read_text() == "1"  # the model cache is never removed


def test_a_live_install_without_root_says_to_use_sudo_or_root_in_one_line():
    if os.geteuid() != 0:
        result = install(as_nobody=False)
    else:
        result = install()  # as nobody
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "install-systemd: run as root (sudo), or pass --root DIR to only place the files there"
    ]


def test_bad_arguments_are_refused(root):
    result = install("--purge", "--root", str(root))
    assert result.returncode == 1
    assert result.stderr.strip() == "install-systemd: --purge goes with --uninstall"
    result = install("--frobnicate")
    assert result.returncode == 2 and result.stderr.startswith("usage: install-systemd")
    assert not (root / UNIT).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles sets owners: needs root")
@pytest.mark.skipif(not shutil.which("systemd-sysusers") and os.environ.get("CI") != "true",
                    reason="systemd is not installed (scripts/test installs it)")
def test_the_placed_sysusers_and_tmpfiles_make_the_user_groups_and_directories(root):
    assert install("--root", str(root)).returncode == 0
    # A live install places these files as root; systemd-tmpfiles refuses to follow a path from
    # a directory owned by someone else (nobody, who staged them) into one owned by root.
    for path in [root, *root.rglob("*")]:
        os.lchown(path, 0, 0)
    for command in (["systemd-sysusers", f"--root={root}", "ocrd.conf"],
                    ["systemd-tmpfiles", f"--root={root}", "--create", "ocrd.conf"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)

    users = {line.split(":")[0]: line.split(":") for line in
             (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/group").read_text().splitlines()}
    _, _, uid, gid, _, home, shell = users["ocrd"]
    assert (home, shell) == ("/var/lib/ocrd", "/usr/sbin/nologin")
    assert int(uid) < 1000  # a system user
    assert groups["ocrd"][2] == gid
    for group in ("video", "docker"):  # GPU device nodes, the Docker socket
        assert "ocrd" in groups[group][3].split(","), group

    def owner(relative: str) -> tuple[int, int, int]:
        info = (root / relative).stat()
        return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)

    assert owner("etc/ocrd") == (0, int(gid), 0o750)
    assert owner(CONFIG) == (0, int(gid), 0o640)  # token hashes may live here: not world-readable
    assert owner("var/lib/ocrd") == (int(uid), int(gid), 0o750)
    assert owner("var/lib/ocrd/huggingface") == (int(uid), int(gid), 0o750)
