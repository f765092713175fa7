"""Runner sockets in ``<runtime_dir>/runners/`` that no runner serves on any more.

Each runner serves on ``runners/<random>.sock``. The worker removes its socket when it exits, and
the daemon when it stops or kills a runner or sees one die (``ocrd.runners.process``); a worker
that is SIGKILLed while no daemon watches it (the daemon itself was killed) leaves its file behind.
The daemon sweeps such leftovers at start-up, and ``ocrctl cleanup`` lists and removes them.

A socket is stale when no live socket is bound to it: its name is not in the kernel's table of
Unix sockets (``/proc/net/unix``) and connecting to it is refused. The table matters because a
runner that is still loading has bound its socket but accepts nothing yet, so a refused connection
alone would take it for dead. Only sockets are ever removed: other files, symlinks (never
followed) and a ``runners`` that is itself a symlink are left alone. Everything here blocks (a
directory scan, connect probes): the daemon calls it before serving or from a worker thread.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

log = logging.getLogger("ocrd.runners.sockets")

UNIX_SOCKET_TABLE = Path("/proc/net/unix")
PROBE_TIMEOUT = 1.0  # seconds; a dead socket refuses at once, a busy live one may be slow


def stale_sockets(directory: Path) -> list[Path]:
    """The sockets in ``directory`` that no live process is bound to, sorted by name."""
    candidates = _sockets_in(directory)
    if not candidates:
        return []
    # Read after listing: a socket bound before we listed it shows in the table by now.
    bound = _bound_names()
    return [path for path in candidates if path.name not in bound and not _accepting(path)]


def remove_socket(path: Path) -> bool:
    """Unlinks ``path`` if it is (still) a socket; False when it is gone or something else now."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        os.unlink(path)  # unlink never follows a symlink
    except FileNotFoundError:
        return False
    return True


def sweep(directory: Path) -> list[Path]:
    """Removes the stale sockets in ``directory`` (daemon start-up); returns those removed."""
    removed = []
    for path in stale_sockets(directory):
        try:
            if remove_socket(path):
                removed.append(path)
        except OSError as exc:
            log.warning("could not remove the stale runner socket %s: %s", path, exc)
    if removed:
        log.info("removed %d stale runner socket(s) from %s (runners that ended without removing "
                 "theirs)", len(removed), directory)
    return removed


def _sockets_in(directory: Path) -> list[Path]:
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []  # a symlink (or a file) where the directory should be: not ours to follow
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:  # unreadable: worth a line, not worth failing a start or a cleanup
        log.warning("cannot look for stale runner sockets in %s: %s", directory, exc)
        return []
    found = []
    for entry in entries:
        try:
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                found.append(Path(entry.path))
        except FileNotFoundError:
            continue  # removed while we looked
    return sorted(found)


def _bound_names() -> frozenset[str]:
    """The base names of every Unix socket bound in this network namespace (runners share the
    daemon's); empty where the table cannot be read, and then the connect probe alone decides.

    Base names, not paths: the table shows the path a process gave to bind(), which may be
    relative. Matching on the name can only spare a socket, never remove a live one."""
    try:
        lines = UNIX_SOCKET_TABLE.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    except OSError:
        return frozenset()
    # "Num RefCount Protocol Flags Type St Inode Path": the path, if any, is the eighth field.
    fields = (line.split(maxsplit=7) for line in lines)
    return frozenset(f[7].rpartition("/")[2] for f in fields if len(f) == 8)


def _accepting(path: Path) -> bool:
    """Whether connecting to ``path`` could reach a process: only a refusal says nobody is there
    (a timeout, a full backlog or a permission error all mean someone might be)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
        except OSError:
            return True
    return True
