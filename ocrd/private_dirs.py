"""The directories ocrd keeps its sockets in: created private, or refused at start.

A client trusts a Unix socket by its path alone, so whoever may create or rename files in the
socket's directory can put their own socket there and answer in ocrd's place. Issue 11 did just
that: a second user made ``/tmp/ocrd-UID/runners`` mode 0777 before the victim first started
ocrd, then swapped the runner's socket and answered the victim's chat requests.

As tmux does for ``/tmp/tmux-UID``: a directory ocrd creates gets its mode set explicitly (mkdir's
mode is filtered by the umask); one that already exists — or that someone else created first, in
the race between looking and mkdir — must be a real directory (not a symlink), owned by ocrd's
user (or root), writable by nobody else, and no more open than the caller allows. Otherwise
ocrd refuses to start with one line saying which directory, why, and what to do.

Only the directory itself is checked, not its parents (as tmux does): /tmp's sticky bit already
keeps other users from renaming a directory they do not own.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from ocrd.addresses import default_runtime_dir
from ocrd.errors import ConfigError

RUNNERS_SUBDIR = "runners"
# Bits that let someone else add, remove or rename entries: never allowed, whatever the caller says.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def ensure_private_dir(path: Path, *, mode: int, what: str, at_most: int | None = None,
                       fix: str | None = None, holds: str = "sockets") -> None:
    """Creates ``path`` with exactly ``mode``, or checks the directory that is there.

    ``at_most``: the most an existing directory may grant (default ``mode``), never group or
    other write. ``what`` names the setting in the one-line ConfigError; ``fix`` is its last
    resort (default: point the setting elsewhere); ``holds`` says what in it others could
    replace or read.
    """
    fix = fix or f"set {what} to a directory of your own"
    if _create(path, mode, what, fix):
        _set_mode(path, mode)
    _check(path, (mode if at_most is None else at_most) & ~_WRITABLE_BY_OTHERS, what, fix, holds)


def prepare_state_dir(state_dir: Path) -> None:
    """At daemon start: ``state_dir`` (batches, uploaded files, what must outlive a restart)
    created 0700, or an existing one checked as the socket folders are (0750 at most: systemd's
    StateDirectoryMode, for the group that reads the Hugging Face cache kept there), and written
    to once, so that a read-only or full file system is one line at start rather than a failed
    batch later."""
    fix = "set state_dir to a directory of your own (OCRD_STATE_DIR)"
    ensure_private_dir(state_dir, mode=0o700, at_most=0o750, what="state_dir", fix=fix,
                       holds="files (uploads, batch results)")
    probe = state_dir / f".ocrd-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ocrd")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"state_dir: ocrd cannot write in {state_dir}: {exc.strerror or exc}; "
                          f"give the user that runs ocrd write access, free some space, or {fix}") from None


def prepare_socket_dirs(runtime_dir: Path, control_socket: Path) -> None:
    """At daemon start, before anything listens or any runner starts: ``runtime_dir``, its
    ``runners/`` (0700) and the control socket's directory."""
    # Root's /run/ocrd usually holds the system socket that members of its group use, so they
    # must be able to enter it (0755, as systemd's RuntimeDirectory); a user's own daemon serves
    # only that user, and its /tmp fallback must be closed to everyone else.
    mode = 0o755 if os.geteuid() == 0 else 0o700
    fix = None
    if runtime_dir == default_runtime_dir() and runtime_dir.parent == Path("/tmp"):  # the fallback
        fix = "set XDG_RUNTIME_DIR (e.g. /run/user/UID) or runtime_dir to a directory of your own"
    # An existing runtime_dir may be 0755 or 0750 (systemd's RuntimeDirectoryMode): the control
    # socket may live in it. Runner sockets never need anyone else, hence 0700 for runners/.
    ensure_private_dir(runtime_dir, mode=mode, at_most=0o755, what="runtime_dir", fix=fix)
    ensure_private_dir(runtime_dir / RUNNERS_SUBDIR, mode=0o700, what="runtime_dir", fix=fix)
    ensure_control_socket_dir(control_socket)


def ensure_control_socket_dir(control_socket: Path) -> None:
    """The control socket's directory: 0755 at most, as clients in the socket's group must reach
    the socket; never writable by others, who could replace the socket ocrctl trusts by its path."""
    ensure_private_dir(control_socket.absolute().parent, mode=0o755, what="grpc.socket",
                       fix="set grpc.socket to a path in a directory of your own")


def _create(path: Path, mode: int, what: str, fix: str) -> bool:
    """True when this call made the directory; False when something is there already."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, mode)
    except FileExistsError:
        return False  # ours from an earlier run, or someone else's: _check tells
    except OSError as exc:
        raise ConfigError(f"{what}: cannot create the directory {path}: {exc.strerror}; {fix}") from None
    return True


def _set_mode(path: Path, mode: int) -> None:
    """Sets the mode through a descriptor of the directory itself, so that a symlink swapped in
    after mkdir is never followed; on any surprise it leaves the explaining to _check."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _check(path: Path, allowed: int, what: str, fix: str, holds: str = "sockets") -> None:
    try:
        info = os.lstat(path)
    except OSError as exc:  # gone again since _create: someone else is at work there
        raise ConfigError(f"{what}: cannot inspect {path}: {exc.strerror}; {fix}") from None
    me = os.geteuid()
    if info.st_uid not in (me, 0):  # first: whatever it is, its owner may swap it
        raise ConfigError(
            f"{what}: {path} belongs to {_user(info.st_uid)}, not to {_user(me)} who runs ocrd, "
            f"so that user could replace ocrd's {holds}; have its owner or root remove it, or {fix}"
        )
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{what}: {path} is a symbolic link, not a directory of ocrd's own; "
                          f"remove it, or {fix}")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what}: {path} exists and is not a directory; remove it, or {fix}")
    granted = stat.S_IMODE(info.st_mode) & 0o777
    if granted & ~allowed:
        danger = (f"other users could replace ocrd's {holds} in it" if granted & _WRITABLE_BY_OTHERS
                  else f"other users could reach the {holds} in it")
        raise ConfigError(f"{what}: the directory {path} has mode {granted:03o}, so {danger}; "
                          f"run 'chmod {allowed:o} {path}', or {fix}")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
