"""README.md's blocks are all marked (run, or not run and why), its TOML blocks parse, and the
texts it shows for the example images are the images' own (examples/README.md). Running them is
tests/e2e/test_readme_blocks.py."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.support.readme_blocks import blocks, problems

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def test_every_block_says_whether_the_readme_test_runs_it():
    assert problems(blocks(README)) == []


def test_the_directive_rules_catch_a_block_without_one(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("```bash\nls\n```\n\n<!-- output -->\n```text\nx\n```\n\n<!-- run -->\n```toml\na = 1\n```\n")
    assert [line.split(":")[1].split()[0] for line in problems(blocks(readme))] == ["1", "6", "11"]


def test_the_toml_blocks_of_the_readme_and_docs_parse():
    found = [(path, block) for path in [README, *sorted((REPO / "docs").glob("*.md"))]
             for block in blocks(path) if block.language == "toml"]
    assert len(found) >= 5
    for _path, block in found:
        try:
            tomllib.loads(block.body)
        except tomllib.TOMLDecodeError as exc:
            raise AssertionError(f"{block.where()}: {exc}") from None


def test_the_example_outputs_are_the_example_images_text():
    examples = (REPO / "examples" / "README.md").read_text(encoding="utf-8")
    texts = dict(re.findall(r"^## (\S+)\n+```text\n(.*?)\n```", examples, re.S | re.M))
    found = blocks(README)
    checked = 0
    for index, block in enumerate(found):
        if not block.is_output:
            continue
        command = found[index - 1].body
        image = next((name for name in texts if name in command or name.replace(".png", ".pdf") in command), None)
        if image is not None:
            # A PDF's pages as markdown: a "<!-- page N -->" line before each.
            shown = [line for line in block.body.splitlines() if line and not line.startswith("<!--")]
            assert shown == texts[image].splitlines(), block.where()
            checked += 1
    assert checked >= 2
