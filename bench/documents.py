#!/usr/bin/env python3
"""Documents: a PDF through ``POST /v1/ocr`` with PP-OCR against the same work in one process.

Throughput: a ``--pages``-page text PDF (tests/support/documents.py) read by ocrd (``/v1/ocr``,
``builtin/ppocr`` loaded before anything is timed) and by pypdfium2 + rapidocr in this process at
the same resolution (200 dpi, the catalog's) and the same rapidocr settings as the builtin engine
(``Det.limit_type`` max, ``det_limit_side_len`` 960); rounds alternate between them, and the
figure is the median of the rounds' ratios (ocrd pages/s over direct pages/s). The like-for-like
ocrd runs with the builtin engine's extra steps off (``builtin.layout``, ``orientation``,
``preprocess``); a second ocrd with its defaults shows what layout, orientation and the damaged-
scan check cost on top.

Memory: the daemon's resident memory (VmRSS of the ``ocrd serve`` process, runners not included)
sampled every 50 ms while a ``--big``-page PDF goes through; a pipeline that holds pages would grow
with them, so the report gives the peak over the first tenth of the run and over the whole run.

    .venv/bin/python bench/documents.py [--rounds 3] [--pages 20] [--big 500]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "builtin/ppocr"
DPI = 200


def direct_pages_per_second(pdf: bytes) -> float:
    import pypdfium2 as pdfium
    from rapidocr import RapidOCR

    ocr = direct_pages_per_second.__dict__.setdefault(
        "ocr", RapidOCR(params={"Det.limit_type": "max", "Det.limit_side_len": 960}))
    started = time.perf_counter()
    document = pdfium.PdfDocument(pdf)
    for index in range(len(document)):
        image = document[index].render(scale=DPI / 72).to_pil()
        if not ocr(image).txts:
            raise SystemExit("direct OCR found no text")
    pages = len(document)
    document.close()
    return pages / (time.perf_counter() - started)


def ocrd_pages_per_second(http, pdf: bytes) -> float:
    url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    body = {"model": MODEL, "document": {"type": "document_url", "document_url": url}}
    started = time.perf_counter()
    response = http.post("/v1/ocr", json=body)
    response.raise_for_status()
    pages = response.json()["pages"]
    if not all(page["markdown"] for page in pages):
        raise SystemExit("ocrd returned a page without text")
    return len(pages) / (time.perf_counter() - started)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_while(http, pid: int, pdf: bytes) -> tuple[int, int, int, float]:
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_kib(pid)))
            time.sleep(0.05)

    before = rss_kib(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    try:
        rate = ocrd_pages_per_second(http, pdf)
    finally:
        done.set()
        sampler.join()
    cut = started + (time.perf_counter() - started) / 10
    early = max((kib for at, kib in samples if at <= cut), default=before)
    return before, early, max(kib for _, kib in samples), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--big", type=int, default=500, help="pages of the memory run (0: skip it)")
    args = parser.parse_args()

    from tests.support.daemon import running_daemon
    from tests.support.documents import PAGES, text_pdf

    pdf = text_pdf([PAGES[i % len(PAGES)] for i in range(args.pages)])
    plain_config = {"builtin": {"layout": "off", "orientation": "off", "preprocess": "off"}}
    direct: list[float] = []
    through: dict[str, list[float]] = {"plain": [], "full": []}
    with running_daemon(plain_config) as plain, running_daemon() as full, \
            plain.http(timeout=3600) as plain_http, full.http(timeout=3600) as full_http:
        clients = {"plain": plain_http, "full": full_http}
        for daemon in (plain, full):
            if daemon.ocrctl("load", MODEL).returncode != 0:
                raise SystemExit("could not load " + MODEL)
        for http in clients.values():
            ocrd_pages_per_second(http, text_pdf([PAGES[0]]))  # warm-up
        direct_pages_per_second(text_pdf([PAGES[0]]))
        for _ in range(args.rounds):
            direct.append(direct_pages_per_second(pdf))
            for name, http in clients.items():
                through[name].append(ocrd_pages_per_second(http, pdf))
        print(f"{args.pages}-page PDF, {DPI} dpi: direct {statistics.median(direct):.2f} pages/s")
        for name, rates in through.items():
            ratios = [rate / base for rate, base in zip(rates, direct, strict=True)]
            print(f"  through ocrd ({name}): {statistics.median(rates):.2f} pages/s, ratio "
                  f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        daemon, http = full, full_http
        if args.big:
            big = text_pdf([PAGES[i % len(PAGES)] for i in range(args.big)])
            before, early, peak, rate = peak_rss_while(http, daemon.pid, big)
            print(f"{args.big}-page PDF: daemon RSS {before / 1024:.0f} MiB before, peak "
                  f"{early / 1024:.0f} MiB in the first tenth, {peak / 1024:.0f} MiB over the run "
                  f"({rate:.2f} pages/s)")


if __name__ == "__main__":
    main()
