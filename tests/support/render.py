"""Test images with known text, and a way to score OCR output against that text.

Images are rendered with Pillow and a DejaVu font (Debian's fonts-dejavu-core), black on white
with generous margins and line spacing: the point is to test ocrd's plumbing and the engines'
accuracy on clean input, not to benchmark OCR on hard scans. ``scripts/make-example-images``
renders ``examples/*.png`` with this same function, so there is one renderer.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)


def find_font(name: str) -> Path:
    """The path of font file ``name`` in the usual font directories; fails saying what to install."""
    for directory in FONT_DIRS:
        for candidate in Path(directory).rglob(name) if Path(directory).is_dir() else ():
            return candidate
    raise FileNotFoundError(
        f"font {name!r} not found in {', '.join(FONT_DIRS)}; "
        "install the DejaVu fonts (Debian: apt-get install fonts-dejavu-core)"
    )


def render_text_image(lines: list[str], font_size: int = 28, font: str = "DejaVuSans.ttf") -> bytes:
    """A PNG with each of ``lines`` on its own line, black on white."""
    face = ImageFont.truetype(str(find_font(font)), font_size)
    margin = font_size * 2
    line_height = int(font_size * 1.8)  # wide spacing so detectors never merge two lines
    widths = [int(face.getlength(line)) for line in lines] or [0]
    size = (max(widths) + 2 * margin, len(lines) * line_height + 2 * margin)
    image = Image.new("L", size, color=255)  # greyscale keeps the PNGs small
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * line_height), line, fill=0, font=face)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def data_url(png_bytes: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png_bytes).decode('ascii')}"


def normalise_lines(text: str) -> str:
    """Each line stripped, empty lines dropped, joined with newlines."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def char_accuracy(expected: str, got: str) -> float:
    """1 - character error rate of ``got`` against ``expected`` (line-normalised); may go below 0."""
    want, have = normalise_lines(expected), normalise_lines(got)
    if not want:
        raise ValueError("expected text is empty: accuracy is undefined")
    return 1.0 - Levenshtein.distance(want, have) / len(want)
