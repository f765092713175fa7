#!/usr/bin/env python3
"""Damaged scans: the builtin engines' character accuracy with ``preprocess`` off and auto.

Pages with known text (tests/support/damage.py: an English invoice page, and a Russian one for
tesseract) are damaged reproducibly (salt-and-pepper noise at 2/5/10 %, skew, low contrast under
uneven light, blur, JPEG q12) and read through the builtin engine itself (``create_engine``, the
text output of chat) with ``preprocess`` off and auto; accuracy is 1 - character error rate
(tests/support/render.char_accuracy). For clean pages it also checks that auto reads exactly
what off reads.

Cost: ``ocrd.worker.preprocess.prepare`` on A4 pages at 200 and 300 dpi (the invoice text tiled
down the page), clean and with 5 % salt-and-pepper and a 2-degree skew: median of ``--repeats``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/damaged_scans.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image

from ocrd.worker.builtin_worker import BuiltinEngine, create_engine
from ocrd.worker.preprocess import PROFILES, prepare
from tests.support import damage
from tests.support.render import char_accuracy

COLUMNS = (  # (heading, backend, page's lines)
    ("PP-OCR en", "ppocr", damage.ENGLISH),
    ("tesseract en", "tesseract", damage.ENGLISH),
    ("tesseract ru", "tesseract", damage.RUSSIAN),
)


def engines() -> dict[tuple[str, str], BuiltinEngine]:
    options = {"ppocr": {"backend": "ppocr", "det_limit_side_len": 960},
               "tesseract": {"backend": "tesseract", "languages": "eng+rus", "psm": 3}}
    loaded = {}
    for backend, base in options.items():
        for mode in ("off", "auto"):
            engine = create_engine(f"builtin/{backend}", {**base, "preprocess": mode})
            engine.backend.load(lambda *_: None)
            loaded[backend, mode] = engine
    return loaded


def read(engine: BuiltinEngine, image: Image.Image) -> str:
    return "\n".join(engine.backend.recognise(engine.prepared(image)))


def accuracy_table(loaded: dict[tuple[str, str], BuiltinEngine]) -> None:
    pages = {id(lines): damage.page(lines) for _, _, lines in COLUMNS}
    heads = " | ".join(f"{head} off | {head} auto" for head, _, _ in COLUMNS)
    print(f"| damage | {heads} | steps (en) |")
    print("|---|" + "---|" * (2 * len(COLUMNS) + 1))
    for spoil in damage.DAMAGES:
        cells = []
        for _, backend, lines in COLUMNS:
            image = damage.to_rgb(spoil.apply(pages[id(lines)]))
            off, auto = (read(loaded[backend, mode], image) for mode in ("off", "auto"))
            if spoil.name == "clean" and off != auto:
                raise SystemExit(f"preprocessing changed a clean page's text ({backend}):\n{off}\n---\n{auto}")
            cells += [f"{char_accuracy(chr(10).join(lines), text):.3f}" for text in (off, auto)]
        steps = prepare(damage.to_rgb(spoil.apply(pages[id(damage.ENGLISH)])), PROFILES["tesseract"]).steps
        print(f"| {spoil.name} | " + " | ".join(cells) + f" | {'; '.join(steps) or '-'} |", flush=True)


def a4_page(dpi: int) -> Image.Image:
    width, height = round(8.27 * dpi), round(11.69 * dpi)
    text = damage.page(damage.ENGLISH, font_size=round(28 * dpi / 200))
    sheet = Image.new("L", (width, height), 255)
    for top in range(0, height - text.height, text.height):
        sheet.paste(text.crop((0, 0, min(text.width, width), text.height)), (0, top))
    return sheet


def cost_table(repeats: int) -> None:
    print("\n| page | clean | salt-and-pepper 5% | skew 2° | low contrast, uneven light |")
    print("|---|---|---|---|---|")
    for dpi in (200, 300):
        sheet = a4_page(dpi)
        cells = []
        for spoil in (lambda i: i, lambda i: damage.salt_and_pepper(i, 0.05),
                      lambda i: damage.skew(i, 2.0).resize(i.size), damage.uneven_light):
            image = damage.to_rgb(spoil(sheet))
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                prepare(image, PROFILES["tesseract"])
                times.append(time.perf_counter() - started)
            cells.append(f"{statistics.median(times) * 1000:.0f} ms")
        print(f"| A4 {dpi} dpi ({sheet.width}x{sheet.height}) | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # rapidocr's INFO lines
    accuracy_table(engines())
    cost_table(args.repeats)


if __name__ == "__main__":
    main()
