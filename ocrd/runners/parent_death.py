"""Starts a program that the kernel kills when the daemon dies (``PR_SET_PDEATHSIG``).

Not ``subprocess``'s ``preexec_fn``: that runs Python in the forked child of a multi-threaded
daemon (gRPC, uvicorn and executor threads), where a lock some other thread held at the fork (the
allocator's, for one) is never released, and the child can hang before ``exec`` — with no output,
until the load times out. Instead the child execs a Python interpreter on the few lines below,
which arm the signal and then ``execv`` the real program: the setting survives ``execve`` for an
ordinary binary, and the program keeps its pid and its own command line.

The interpreter may be any Python (the vLLM venv's, for one): the bootstrap needs only its
standard library.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# argv: parent pid, then the program and its arguments. A parent that died before the signal was
# armed is noticed through getppid, and the program never starts.
BOOTSTRAP = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:\n"  # 1 = PR_SET_PDEATHSIG
    "    sys.exit('prctl(PR_SET_PDEATHSIG): ' + os.strerror(ctypes.get_errno()))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(command: Sequence[str], python: str, parent: int | None = None) -> list[str]:
    """``command`` run by way of the bootstrap, under ``python``; SIGKILLed when ``parent`` (this
    process by default) dies. ``command[0]`` must be a path, as ``execv`` does not search PATH."""
    return [python, "-c", BOOTSTRAP, str(os.getpid() if parent is None else parent), *command]
