"""The verdicts of ``ocrctl selftest`` and its test image."""

from __future__ import annotations

import io

from PIL import Image

from ocrctl.commands.selftest import (
    EXPECTED_TEXT,
    Outcome,
    format_outcomes,
    judge,
    render_test_image,
)


def test_an_ocr_engine_must_return_the_text_itself_ignoring_case_and_spacing():
    assert judge("builtin", EXPECTED_TEXT)
    assert judge("builtin", "  hello\nFROM  ocrd 42 ")
    assert not judge("builtin", "Hello from ocrd 4Z")
    assert not judge("builtin", "Hello from ocrd 42 and more")
    assert not judge("builtin", "")


def test_a_vlm_passes_with_any_text_and_fails_with_none():
    assert judge("transformers", "The image says: hello")
    assert judge("vllm", "x")
    assert not judge("transformers", " \n ")


def test_the_test_image_is_a_greyscale_png_wide_enough_for_its_line():
    image = Image.open(io.BytesIO(render_test_image()))
    assert (image.format, image.mode) == ("PNG", "L")
    assert image.width > image.height > 28
    assert image.getextrema() == (0, 255)  # black text on white


def test_failures_are_listed_under_the_table_with_what_came_back():
    outcomes = [
        Outcome("builtin/ppocr", "builtin", True, 0.5, 4, 8.0, 150 * 2**20, EXPECTED_TEXT),
        Outcome("org/vlm", "transformers", False, 1.25, 0, 0.0, 0, ""),
        Outcome("builtin/tesseract", "builtin", False, error="HTTP 503 Service Unavailable"),
    ]
    lines = format_outcomes(outcomes).splitlines()
    assert lines[2].split() == ["builtin/ppocr", "builtin", "pass", "0.50s", "8.0", "150", "MiB"]
    assert lines[3].split() == ["org/vlm", "transformers", "FAIL", "1.25s", "-", "-"]
    assert lines[-2:] == [f"org/vlm: expected {EXPECTED_TEXT!r}, got no text",
                          f"builtin/tesseract: expected {EXPECTED_TEXT!r}, HTTP 503 Service Unavailable"]
