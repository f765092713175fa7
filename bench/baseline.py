"""An earlier revision of ocrd, run beside the working tree in the same benchmark rounds
(``--baseline REV`` of bench/proxy.py and bench/transformers_overhead.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def checkout(revision: str, into: Path) -> Path:
    """The files of ``revision`` in ``into`` (``git archive``: the working tree is left alone)."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def load_module(path: Path, name: str) -> Any:
    """The Python file at ``path`` (e.g. the baseline's tests/support/daemon.py) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
