"""PDFs through pypdfium2 (PDFium; Apache-2.0/BSD): open, measure pages, render them to PNG.

PDFium is not thread-safe: pypdfium2 forbids calling it from two threads at once, in the whole
process. So every call into it runs on one thread of its own (``_PDFIUM``), never on the event
loop: a request opening a PDF, another rendering a page and a third closing one queue there, and
the loop stays free. Rendering is ~40-110 ms a page (A4, 72-300 dpi) against a second or more of
recognition, so one thread keeps up with CPU engines; it is the place to add processes if a fast
GPU engine ever waits for pages.

Bad documents are the client's fault and get one sentence each (400): not a PDF, encrypted,
corrupt or truncated, no pages. A page whose size at the model's resolution would be over
``limits.max_page_pixels`` is refused (413) from its declared size, before any pixel is made.
"""

from __future__ import annotations

import asyncio
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ocrd.catalog.documents import DocumentFacts
from ocrd.errors import InvalidRequest, PayloadTooLarge

# One thread for the whole process: PDFium's global state allows no other (see the module doc).
_PDFIUM = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfium")
POINTS_PER_INCH = 72


def is_pdf(data: bytes) -> bool:
    """PDF's header, which the standard lets begin anywhere in the first 1024 bytes."""
    return b"%PDF-" in data[:1024]


@dataclass(frozen=True)
class RenderPolicy:
    """How large a model wants its pages: at ``dpi``, or scaled so that the longest side is
    ``longest_side`` pixels; in either case no side over ``max_side`` (catalog facts)."""

    dpi: int | None = 150
    longest_side: int | None = None
    max_side: int | None = None

    def scale(self, width_pt: float, height_pt: float) -> float:
        """Pixels per PDF point for a page of that size."""
        longest = max(width_pt, height_pt, 1e-6)
        scale = self.longest_side / longest if self.longest_side else (self.dpi or 150) / POINTS_PER_INCH
        if self.max_side and longest * scale > self.max_side:
            scale = self.max_side / longest
        return scale


def policy_for(facts: DocumentFacts | None, default_dpi: int) -> RenderPolicy:
    """The catalog's resolution for a model (``[model.document]``), else ``default_dpi``."""
    if facts is not None and (facts.dpi or facts.longest_side):
        return RenderPolicy(dpi=facts.dpi, longest_side=facts.longest_side, max_side=facts.max_side)
    return RenderPolicy(dpi=default_dpi, max_side=facts.max_side if facts is not None else None)


@dataclass(frozen=True)
class RenderedPage:
    """One page as a PNG, and what Mistral's ``dimensions`` report."""

    index: int
    png: bytes
    width: int
    height: int
    dpi: int


class PdfDocument:
    """An open PDF. Use ``open_pdf``; every method runs on PDFium's thread."""

    def __init__(self, pdf: Any, page_count: int):
        self._pdf = pdf
        self.page_count = page_count

    async def check_sizes(self, pages: list[int], policy: RenderPolicy, max_pixels: int) -> None:
        """413 for the first of ``pages`` whose rendering would have more than ``max_pixels``."""
        sizes = await _on_pdfium(lambda: [self._pdf.get_page_size(i) for i in pages])
        for index, (width_pt, height_pt) in zip(pages, sizes, strict=True):
            width, height = _pixels(width_pt, height_pt, policy)
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"page {index} is {width_pt:.0f} x {height_pt:.0f} points, {width} x {height} = "
                    f"{width * height} pixels at this model's resolution, more than {max_pixels} "
                    "(limits.max_page_pixels)", param="document")

    async def render(self, index: int, policy: RenderPolicy) -> RenderedPage:
        return await _on_pdfium(lambda: self._render(index, policy))

    def _render(self, index: int, policy: RenderPolicy) -> RenderedPage:
        page = self._pdf[index]
        try:
            width_pt, height_pt = page.get_size()
            scale = policy.scale(width_pt, height_pt)
            # draw_forms: filled-in form fields are part of what a reader sees on the page.
            bitmap = page.render(scale=scale, may_draw_forms=True)
            image = bitmap.to_pil()
        finally:
            page.close()
        png = io.BytesIO()
        image.save(png, format="PNG", compress_level=1)  # fast: a page is sent once, locally
        return RenderedPage(index, png.getvalue(), image.width, image.height,
                            round(scale * POINTS_PER_INCH))

    async def close(self) -> None:
        await _on_pdfium(self._pdf.close)


async def open_pdf(data: bytes) -> PdfDocument:
    """The PDF in ``data``; InvalidRequest with one clear sentence when it cannot be read."""
    return await _on_pdfium(lambda: _open(data))


def _open(data: bytes) -> PdfDocument:
    import pypdfium2 as pdfium  # on first use: most daemons never see a PDF

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise _unreadable(getattr(exc, "err_code", None)) from None
    try:
        pdf.init_forms()  # so that rendering draws filled-in form fields
        count = len(pdf)
    except Exception:
        pdf.close()
        raise
    if count == 0:
        pdf.close()
        raise InvalidRequest("the PDF has no pages", param="document")
    return PdfDocument(pdf, count)


def _unreadable(code: int | None) -> InvalidRequest:
    import pypdfium2.raw as pdfium_c

    if code == pdfium_c.FPDF_ERR_PASSWORD:
        message = ("the PDF is encrypted with a password; ocrd cannot open it: send it decrypted "
                   "(e.g. qpdf --decrypt --password=... in.pdf out.pdf)")
    elif code == pdfium_c.FPDF_ERR_SECURITY:
        message = "the PDF uses a security handler PDFium does not support; send it decrypted"
    else:
        message = "the document is not a readable PDF: it is corrupt or truncated"
    return InvalidRequest(message, param="document", code="invalid_document")


def _pixels(width_pt: float, height_pt: float, policy: RenderPolicy) -> tuple[int, int]:
    scale = policy.scale(width_pt, height_pt)
    # PDFium rounds the bitmap's sides the same way.
    return max(1, math.ceil(width_pt * scale - 0.5)), max(1, math.ceil(height_pt * scale - 0.5))


async def _on_pdfium(call: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_PDFIUM, call)
