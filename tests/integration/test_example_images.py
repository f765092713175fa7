"""examples/: what scripts/make-example-images renders, and every ``ocrctl ocr`` command that
examples/README.md shows prints exactly what it says, through a real ``ocrd serve`` and the real
``ocrctl`` (the builtin engines: rapidocr, and tesseract with eng+rus)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.support.daemon import REPO, running_daemon

EXAMPLES = REPO / "examples"
README = (EXAMPLES / "README.md").read_text(encoding="utf-8")


def section(image: str) -> str:
    match = re.search(rf"^## {re.escape(image)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"examples/README.md has no section for {image}"
    return match.group(1)


def blocks(image: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)\n```", section(image), re.S | re.M)


def commands(image: str) -> list[list[str]]:
    """The ``ocrctl`` arguments of each command line in the section's bash blocks."""
    lines = [line for block in blocks(image, "bash") for line in block.splitlines()]
    assert lines and all(line.startswith(".venv/bin/ocrctl ") for line in lines), lines
    return [shlex.split(line)[1:] for line in lines]


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


def test_the_examples_are_what_the_script_renders():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make-example-images"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_sample_has_no_glyph_a_reader_could_take_for_another():
    text = blocks("sample.png", "text")[0]
    assert not set(text) & set("Il1O0"), text
    assert "rn" not in text


@pytest.mark.parametrize("image", ["sample.png", "sample-ru.png"])
def test_each_command_shown_prints_exactly_the_text_of_the_image(daemon, image):
    text = blocks(image, "text")[0]
    shown = commands(image)
    assert shown, f"no command shown for {image}"
    for args in shown:
        result = daemon.ocrctl(*args)
        assert (result.returncode, result.stdout, result.stderr) == (0, text + "\n", ""), args


def test_ppocr_on_the_russian_sample_says_on_stderr_what_the_readme_shows(daemon):
    assert "`.venv/bin/ocrctl ocr examples/sample-ru.png`" in section("sample-ru.png")
    hint = blocks("sample-ru.png", "text")[-1]
    result = daemon.ocrctl("ocr", "examples/sample-ru.png")
    assert (result.returncode, result.stderr) == (0, hint + "\n")
    assert not re.search("[\u0400-\u04ff]", result.stdout), result.stdout


def test_the_sample_pdf_reads_as_the_sample_image(daemon):
    text = blocks("sample.png", "text")[0]
    for model in ("ppocr", "tesseract"):
        result = daemon.ocrctl("ocr", "--model", model, "--format", "text", "examples/sample.pdf")
        assert (result.returncode, result.stdout, result.stderr) == (0, text + "\n", ""), model
