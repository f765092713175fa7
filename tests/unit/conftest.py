"""What every unit test shares: it starts no process (those that need one live in
tests/integration), so the unit tier stays fast and runs anywhere."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a unit test started a process; move it to tests/integration")


@pytest.fixture(autouse=True, scope="module")
def _no_subprocess() -> Iterator[None]:
    # Module scope, so that module-scoped fixtures are held to it too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _refuse)
        patch.setattr(os, "fork", _refuse)
        patch.setattr(os, "posix_spawn", _refuse)
        patch.setattr(asyncio, "create_subprocess_exec", _refuse)
        yield
