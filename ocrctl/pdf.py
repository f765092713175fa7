"""PDFs on ocrctl's side (``ocrctl ocr``): count the pages and cut one-page PDFs out of a document,
so that each page goes to ``/v1/ocr`` on its own without re-sending the whole file.

PDFium (pypdfium2) is not thread-safe: pypdfium2 forbids two threads in it at once, in the whole
process. Every call into it runs on one thread of its own (``_PDFIUM``), never on the event loop:
opening, cutting and closing the documents read at the same time queue there. Cutting a page is
milliseconds against the seconds the daemon spends reading it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ocrctl.client import CommandError

T = TypeVar("T")

# Created on first use: most ocrctl runs never open a PDF.
_PDFIUM: ThreadPoolExecutor | None = None


def is_pdf(data: bytes) -> bool:
    """PDF's header, which the standard lets begin anywhere in the first 1024 bytes."""
    return b"%PDF-" in data[:1024]


class PdfPages:
    """An open PDF. Use ``PdfPages.open``; every call into PDFium runs on PDFium's thread."""

    def __init__(self, pdf: Any, page_count: int):
        self._pdf = pdf
        self.page_count = page_count

    @classmethod
    async def open(cls, data: bytes) -> PdfPages:
        """The PDF in ``data``; CommandError with one sentence saying what to do when unreadable."""
        return await _on_pdfium(lambda: _open(data))

    async def page_pdf(self, index: int) -> bytes:
        """Page ``index`` alone, as a PDF of one page (its fonts and images come with it)."""
        return await _on_pdfium(lambda: self._cut(index))

    def _cut(self, index: int) -> bytes:
        import pypdfium2 as pdfium

        single = pdfium.PdfDocument.new()
        try:
            single.import_pages(self._pdf, [index])
            out = io.BytesIO()
            single.save(out)
        finally:
            single.close()
        return out.getvalue()

    async def close(self) -> None:
        await _on_pdfium(self._pdf.close)


def _open(data: bytes) -> PdfPages:
    import pypdfium2 as pdfium  # here: the other commands, and images, start faster without it
    import pypdfium2.raw as pdfium_c

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        code = getattr(error, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise CommandError("the PDF is encrypted with a password: decrypt it first "
                               "(qpdf --decrypt --password=... IN.pdf OUT.pdf), then OCR OUT.pdf") from None
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise CommandError("the PDF uses a security handler PDFium does not support: decrypt it first "
                               "(qpdf --decrypt IN.pdf OUT.pdf)") from None
        raise CommandError("not a readable PDF: it is corrupt or truncated") from None
    count = len(pdf)
    if count == 0:
        pdf.close()
        raise CommandError("the PDF has no pages")
    return PdfPages(pdf, count)


async def _on_pdfium(call: Callable[[], T]) -> T:
    global _PDFIUM
    if _PDFIUM is None:
        # One thread for the whole process: PDFium's global state allows no other.
        _PDFIUM = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfium")
    return await asyncio.get_running_loop().run_in_executor(_PDFIUM, call)
