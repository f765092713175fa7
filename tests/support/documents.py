"""PDFs for the document tests, written here: text pages (fpdf2, DejaVu Sans), scans (rendered
images saved as image-only PDF pages by Pillow), an encrypted one, a truncated one, and one with a
huge declared page. Each text page's lines are known, so OCR output is scored against them."""

from __future__ import annotations

import io

from fpdf import FPDF
from PIL import Image

from tests.support.render import find_font, render_text_image

# Lines of a few pages: distinct words per page, so a page's text shows which page it came from.
PAGES = [
    ["Quarterly report for the year 2024", "Revenue grew by eleven percent", "in the third quarter."],
    ["Second page of the document", "Operating costs fell slightly", "while headcount stayed flat."],
    ["Third page: the outlook", "We expect steady demand", "for the coming twelve months."],
]


def text_pdf(pages: list[list[str]] = PAGES, font_size: int = 16) -> bytes:
    """A born-digital A4 PDF: each page's lines in DejaVu Sans, well apart."""
    pdf = FPDF(format="A4", unit="pt")
    pdf.add_font("DejaVu", fname=str(find_font("DejaVuSans.ttf")))
    pdf.set_auto_page_break(False)
    for lines in pages:
        pdf.add_page()
        pdf.set_font("DejaVu", size=font_size)
        for number, line in enumerate(lines):
            pdf.text(72, 96 + number * font_size * 2.2, line)
    return bytes(pdf.output())


def scanned_pdf(pages: list[list[str]] = PAGES) -> bytes:
    """An image-only PDF (what a scanner makes): each page a rendered image of its lines."""
    images = [Image.open(io.BytesIO(render_text_image(lines))).convert("RGB") for lines in pages]
    out = io.BytesIO()
    images[0].save(out, format="PDF", save_all=True, append_images=images[1:], resolution=150)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="user")
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.text(20, 20, "secret")
    return bytes(pdf.output())


def huge_page_pdf() -> bytes:
    """One page of 200 x 200 inches (14400 pt, PDF's largest without UserUnit): ~64 billion pixels
    at 200 dpi."""
    pdf = FPDF(unit="pt", format=(14400, 14400))
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.text(20, 20, "huge")
    return bytes(pdf.output())
