"""PDFs for the document tests, written here: text pages (fpdf2, DejaVu Sans), scans (rendered
images saved as image-only PDF pages by Pillow), an encrypted one, a truncated one, and one with a
huge declared page. Each text page's lines are known, so OCR output is scored against them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fpdf import FPDF
from PIL import Image, ImageDraw

from tests.support.render import data_url, find_font, render_text_image

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


# A report page with a layout: a small running header, a large title, paragraphs, a chart with its
# caption, and a page number at the foot; the texts and where they are (points, baselines).
LAYOUT_HEADER = "ACME Corporation - Annual Report 2024"
LAYOUT_TITLE = "Results of the year"
LAYOUT_BODY = ["Revenue grew by eleven percent in the third quarter,",
               "driven by strong demand for our services in all",
               "regions and a steady pipeline of new contracts."]
LAYOUT_OUTLOOK = ["The outlook for the coming year is positive.", "We expect steady demand and stable margins."]
LAYOUT_FOOTER = "Page 1"
LAYOUT_FIGURE_PT = (72, 280, 472, 520)  # left, top, right, bottom of the chart


def chart_png() -> bytes:
    image = Image.new("RGB", (600, 360), "white")
    draw = ImageDraw.Draw(image)
    for number, height in enumerate([120, 220, 90, 300, 180]):
        draw.rectangle([40 + number * 110, 340 - height, 120 + number * 110, 340], fill=(60, 90 + 30 * number, 200))
    draw.line([30, 340, 580, 340], fill="black", width=3)
    draw.line([30, 20, 30, 340], fill="black", width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def layout_pdf() -> bytes:
    pdf = FPDF(format="A4", unit="pt")
    pdf.add_font("DejaVu", fname=str(find_font("DejaVuSans.ttf")))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_font("DejaVu", size=9)
    pdf.text(72, 40, LAYOUT_HEADER)
    pdf.set_font("DejaVu", size=26)
    pdf.text(72, 120, LAYOUT_TITLE)
    pdf.set_font("DejaVu", size=12)
    for number, line in enumerate(LAYOUT_BODY):
        pdf.text(72, 170 + number * 18, line)
    left, top, right, _ = LAYOUT_FIGURE_PT
    pdf.image(io.BytesIO(chart_png()), x=left, y=top, w=right - left)
    pdf.set_font("DejaVu", size=10)
    pdf.text(72, 540, "Figure 1: revenue by quarter")
    pdf.set_font("DejaVu", size=12)
    for number, line in enumerate(LAYOUT_OUTLOOK):
        pdf.text(72, 590 + number * 18, line)
    pdf.set_font("DejaVu", size=9)
    pdf.text(290, 810, LAYOUT_FOOTER)
    return bytes(pdf.output())


def sideways_scan(lines: list[str] = PAGES[0]) -> bytes:
    """A one-page scan fed in sideways: the page image turned 90 degrees counter-clockwise."""
    page = Image.open(io.BytesIO(render_text_image(lines))).convert("RGB").rotate(90, expand=True)
    out = io.BytesIO()
    page.save(out, format="PDF", resolution=150)
    return out.getvalue()


TABLE_TITLE = "Sales by region"
TABLE_ROWS = [["Region", "Revenue", "Growth"], ["North", "1200", "11%"], ["South", "950", "7%"], ["West", "780", "4%"]]


def table_pdf() -> bytes:
    """A title and a ruled table (fpdf2's table), the rows above."""
    from fpdf.fonts import FontFace

    pdf = FPDF(format="A4", unit="pt")
    pdf.add_font("DejaVu", fname=str(find_font("DejaVuSans.ttf")))
    pdf.add_page()
    pdf.set_font("DejaVu", size=24)
    pdf.text(72, 100, TABLE_TITLE)
    pdf.set_font("DejaVu", size=12)
    pdf.set_xy(72, 140)
    with pdf.table(width=420, col_widths=(140, 140, 140), headings_style=FontFace(emphasis="")) as table:
        for cells in TABLE_ROWS:
            row = table.row()
            for cell in cells:
                row.cell(cell)
    return bytes(pdf.output())


def mixed_pdf() -> tuple[bytes, list[list[str]]]:
    """Born-digital and scanned pages in one PDF (as an office scanner's output stapled to a
    report would be): text page 0, scanned page 1, text page 2, scanned page 0; and each page's
    lines, in order."""
    import pypdfium2 as pdfium

    text, scans = pdfium.PdfDocument(text_pdf()), pdfium.PdfDocument(scanned_pdf())
    mixed = pdfium.PdfDocument.new()
    for source, index in ((text, 0), (scans, 1), (text, 2), (scans, 0)):
        mixed.import_pages(source, [index])
    out = io.BytesIO()
    mixed.save(out)
    for document in (mixed, text, scans):
        document.close()
    return out.getvalue(), [PAGES[0], PAGES[1], PAGES[2], PAGES[0]]


def pdf_document(data: bytes) -> dict:
    """A /v1/ocr ``document`` holding the PDF ``data`` as a data: URL."""
    return {"type": "document_url", "document_url": data_url(data, "application/pdf")}


@contextmanager
def mistral_client(daemon: Any) -> Iterator[Any]:
    """Mistral's own client, pointed at ``daemon`` (timeout: a hang guard for long documents)."""
    from mistralai.client import Mistral

    with Mistral(api_key="unused", server_url=daemon.base_url, timeout_ms=600_000) as client:
        yield client
