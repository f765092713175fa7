"""The README's code blocks and what the README says to do with each (tests/e2e/test_readme_blocks.py).

Every ```bash and ```python block in README.md carries an HTML comment on the line before it
(invisible on GitHub) that says whether the test runs it:

* ``<!-- run -->``: run as written, in order, each in a fresh shell (``bash -e``) from the clone's
  root; it must exit 0;
* ``<!-- run: background, wait for URL -->``: started and left running (a daemon in the
  foreground: "then, in another terminal"), the next block waits until URL answers 200;
* ``<!-- run: python -->``: a Python block, given to ``.venv/bin/python`` on its standard input;
* ``<!-- not run: REASON -->``: not run here, and why (systemd, a GPU, the Hugging Face Hub...).

A ```text block preceded by ``<!-- output -->`` is the exact standard output of the block run
before it. Blocks in other languages (toml, text) carry no directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN_LANGUAGES = ("bash", "python")
_BLOCK = re.compile(r"^(?:<!--\s*(?P<directive>[^>]*?)\s*-->\n)?```(?P<language>\w*)\n(?P<body>.*?)^```\s*$",
                    re.S | re.M)
_BACKGROUND = re.compile(r"^run: background, wait for (?P<url>\S+)$")


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    directive: str  # "" when none
    line: int  # 1-based line of the opening fence
    file: str = "README.md"

    @property
    def runs(self) -> bool:
        return self.directive == "run" or self.directive.startswith("run:")

    @property
    def background_url(self) -> str:
        match = _BACKGROUND.match(self.directive)
        return match.group("url") if match else ""

    @property
    def is_output(self) -> bool:
        return self.directive == "output"

    def where(self) -> str:
        return f"{self.file}:{self.line} (```{self.language})"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        fence = match.start("language") - 3
        found.append(Block(match.group("language"), match.group("body"), match.group("directive") or "",
                           text.count("\n", 0, fence) + 1, path.name))
    return found


def problems(found: list[Block]) -> list[str]:
    """Blocks whose directive is missing or unknown, outputs with nothing run before them."""
    wrong = []
    for index, block in enumerate(found):
        if block.language in RUN_LANGUAGES:
            known = (block.directive in ("run", "run: python") or block.background_url
                     or re.match(r"^not run: \S", block.directive))
            if not known:
                wrong.append(f"{block.where()}: needs <!-- run --> or <!-- not run: REASON --> "
                             f"(has {block.directive!r})")
            elif block.directive == "run: python" and block.language != "python":
                wrong.append(f"{block.where()}: 'run: python' on a {block.language} block")
        elif block.is_output:
            before = found[index - 1] if index else None
            if block.language != "text" or before is None or not before.runs or before.background_url:
                wrong.append(f"{block.where()}: <!-- output --> must be a ```text block right after "
                             f"a block that runs in the foreground")
        elif block.directive:
            wrong.append(f"{block.where()}: a directive on a ```{block.language} block")
    return wrong
