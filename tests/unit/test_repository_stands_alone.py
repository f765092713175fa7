"""A clone of this repository alone must pass its tests: nothing in what the tests, scripts,
benchmarks or CI run may reach for files beside the clone (the ``shared/`` folder a development
checkout happens to have next to it, in particular). What they need is vendored, with its licence,
under ``tests/data/``."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("tests", "scripts", "bench", ".ci")
# "../shared", or a path joined with a folder named shared ("parent / 'shared'", "'shared' / x").
OUTSIDE = re.compile(r"\.\./shared\b|/\s*[\"']shared[\"']|[\"']shared[\"']\s*/")


def _files() -> list[Path]:
    found = []
    for folder in CHECKED:
        for path in sorted((REPO / folder).rglob("*")):
            if (path.is_file() and "__pycache__" not in path.parts and path.suffix != ".gz"
                    and path != Path(__file__).resolve()):  # this file spells the patterns out
                found.append(path)
    return found


def test_no_test_script_benchmark_or_ci_file_reaches_outside_the_clone():
    offenders = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                      for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []


def test_the_check_finds_what_it_looks_for():
    for line in ['spec = REPO.parent / "shared" / "x.json"', "cat ../shared/notes/facts.md",
                 "x = 'shared' / y"]:
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("the shared Hugging Face cache")
    assert _files(), "the folders checked exist"
