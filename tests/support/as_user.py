"""Runs ocrd, ocrctl or a file operation as another (throwaway) user, for tests run as root.

The interpreter and its standard library may live where other users cannot read (here, /root
is 0700), so another user cannot simply exec Python. Instead a root child imports everything it
will need, then drops to the user for good (``setgroups``, ``setgid``, ``setuid``) and runs the
real entry point: the code under test never runs as root.

``python -m tests.support.as_user UID GID ocrd ARGS...``, ``... ocrctl ARGS...``, or
``... try PATH...``: for each PATH, try to create it and to remove it; prints one JSON object
``{PATH: "created" | "removed" | "<OSError class name>"}``. ``... mkdir PATH...``: makes each
directory mode 0777, as the attacker of issue 11 did.
"""

from __future__ import annotations

# Imported while still root, including what the daemon imports lazily on its way to READY.
import importlib.readers  # noqa: F401  (importlib.resources, for the model catalog)
import json
import os
import sys

import uvicorn.lifespan.off
import uvicorn.loops.auto
import uvicorn.protocols.http.auto
import uvicorn.protocols.websockets.auto  # noqa: F401 - loaded before privileges drop (see above)

# The daemon imports these on first use (they cost start-up time): here, before the drop.
from huggingface_hub import errors, file_download, scan_cache_dir, try_to_load_from_cache  # noqa: F401

import ocrctl.__main__
import ocrd.cli.certs
import ocrd.cli.main
import ocrd.daemon


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert (os.geteuid(), os.getegid()) == (uid, gid)


def try_to_write(paths: list[str]) -> dict[str, str]:
    """What this user can do to each path: create a file there, or else remove what is there."""
    outcome: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "x"):
                pass
            outcome[path] = "created"
            continue
        except OSError as exc:
            outcome[path] = type(exc).__name__
        if os.path.lexists(path):
            try:
                os.unlink(path)
                outcome[path] = "removed"
            except OSError as exc:
                outcome[path] = type(exc).__name__
    return outcome


def main(argv: list[str]) -> int:
    uid, gid, command, *args = argv
    drop_privileges(int(uid), int(gid))
    os.environ.pop("XDG_RUNTIME_DIR", None)  # the /tmp fallback is what is under test
    if command == "ocrd":
        return ocrd.cli.main.main(args)
    if command == "ocrctl":
        return ocrctl.__main__.main(args)
    if command == "mkdir":
        for path in args:
            os.mkdir(path)
            os.chmod(path, 0o777)
        return 0
    if command == "try":
        print(json.dumps(try_to_write(args)))
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
