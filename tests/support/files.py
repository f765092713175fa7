"""Small file helpers shared by tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write(path: Path, text: str) -> Path:
    """Writes ``text``, dedented, to ``path`` (UTF-8) and returns ``path``."""
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
