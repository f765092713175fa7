"""The two OCR backends of the builtin engine: PP-OCR (rapidocr, ONNX) and Debian's tesseract.

Both turn one RGB image into its text lines in reading order (top to bottom; left to right
within a line), empty lines dropped. Loading checks everything a request would need, so a
misconfigured backend fails at load time with a message that says what to install or change.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ocrd.errors import ModelLoadFailed, OcrdError
from ocrd.worker.engines import ProgressFn
from ocrd.worker.ocr_lines import OcrLine, TextBox, split_at_gaps, tesseract_lines

log = logging.getLogger("ocrd.worker.ocr")

# A hung tesseract would hold the runner's one request slot forever; no sane page takes this long.
TESSERACT_TIMEOUT_S = 600.0
# Lines whose vertical extents overlap by at least this share of the shorter box are one line.
SAME_LINE_OVERLAP = 0.5


def warmup_image() -> Image.Image:
    """A small image with a word on it, so a warm-up run goes through every model stage."""
    image = Image.new("RGB", (240, 64), "white")
    ImageDraw.Draw(image).text((16, 12), "ocrd 2024", fill="black", font=ImageFont.load_default(32))
    return image


def group_lines(boxes: Sequence[TextBox]) -> list[str]:
    """Joins detected boxes into lines: a box joins the line its vertical extent mostly overlaps."""
    joined = (" ".join(b.text.strip() for b in line) for line in line_groups(boxes))
    return [text for text in joined if text.strip()]


def line_groups(boxes: Sequence[TextBox]) -> list[list[TextBox]]:
    """The boxes of each line (see ``group_lines``), lines top to bottom, boxes left to right."""
    lines: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda b: (b.top + b.bottom) / 2):
        line = lines[-1] if lines else None
        if line is not None:
            top, bottom = min(b.top for b in line), max(b.bottom for b in line)
            overlap = min(bottom, box.bottom) - max(top, box.top)
            shorter = min(bottom - top, box.bottom - box.top)
            if shorter > 0 and overlap >= SAME_LINE_OVERLAP * shorter:
                line.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.left) for line in lines]


class PpocrBackend:
    """rapidocr's bundled PP-OCR det/cls/rec ONNX models: offline, CPU, Latin/CJK (no Cyrillic)."""

    def __init__(self, det_limit_side_len: int, threads: int = 0):
        self.det_limit_side_len = det_limit_side_len
        self.threads = threads  # onnxruntime's intra-op threads; 0: its default (all cores)
        self._ocr: Any = None  # a rapidocr.RapidOCR once loaded (rapidocr has no type hints)

    def load(self, progress: ProgressFn) -> None:
        progress("importing rapidocr", 0.1, "rapidocr, onnxruntime and OpenCV")
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise ModelLoadFailed(
                f"cannot import rapidocr ({exc}); install it with: pip install 'rapidocr==3.10.0' onnxruntime"
            ) from exc
        progress("loading detection and recognition models", 0.4, "bundled PP-OCR det/cls/rec ONNX models")
        # "max" caps the longest side; rapidocr's default ("min") upscales small pages, 2-4x slower.
        params: dict[str, Any] = {"Det.limit_type": "max", "Det.limit_side_len": self.det_limit_side_len}
        if self.threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.threads
        ocr = RapidOCR(params=params)
        # rapidocr builds its ONNX sessions lazily on first use; build them now so that a broken
        # model fails the load and the first request does not pay for it. (rapidocr is pinned.)
        for loader in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
            getattr(ocr, loader, lambda: None)()
        self._ocr = ocr
        progress("warm-up", 0.8, "one inference on a small image")
        if not self.recognise(warmup_image()):
            log.warning("PP-OCR warm-up found no text in the warm-up image")

    def recognise(self, image: Image.Image) -> list[str]:
        return group_lines(self._boxes(image))

    def recognise_lines(self, image: Image.Image) -> list[OcrLine]:
        # PP-OCR scores a whole box, not its words: each word carries its box's score. A line is
        # cut where a wide gap separates its boxes (columns, table cells): the daemon places each
        # part in its own layout region.
        return [OcrLine.of(part, paragraph=None) for line in line_groups(self._boxes(image))
                for part in split_at_gaps(line)]

    def _boxes(self, image: Image.Image) -> list[TextBox]:
        result = self._ocr(image)
        if result.boxes is None or result.txts is None:
            return []  # no text detected
        scores = result.scores if result.scores is not None else [1.0] * len(result.txts)
        return [
            TextBox(text, float(box[:, 0].min()), float(box[:, 1].min()), float(box[:, 1].max()),
                    float(box[:, 0].max()), float(score))
            for box, text, score in zip(result.boxes, result.txts, scores, strict=True)
        ]


def debian_package(language: str) -> str:
    """Debian's package for a tesseract language pack: chi_sim -> tesseract-ocr-chi-sim."""
    return "tesseract-ocr-" + language.lower().replace("_", "-").replace("/", "-")


class TesseractBackend:
    """The ``tesseract`` command (Debian's tesseract-ocr 5.x), one subprocess per image."""

    def __init__(self, cmd: str, languages: str, psm: int):
        self.cmd = cmd
        self.languages = languages
        self.psm = psm
        self._binary = ""  # the tesseract found by load()

    def load(self, progress: ProgressFn) -> None:
        progress("checking tesseract", 0.2, f"looking for {self.cmd!r}")
        self._binary = self._find_binary()
        progress("checking language packs", 0.5, f"need {self.languages}")
        available = self._list_languages()
        for language in self.languages.split("+"):
            if language not in available:
                raise ModelLoadFailed(
                    f"tesseract has no {language!r} language pack; install {debian_package(language)}"
                    " or change builtin.tesseract_languages"
                )
        progress("warm-up", 0.8, "one recognition of a small image")
        self.recognise(warmup_image())

    def _find_binary(self) -> str:
        binary = shutil.which(self.cmd)
        if binary is None:
            raise ModelLoadFailed(
                f"tesseract binary {self.cmd!r} not found; install tesseract-ocr"
                " (Debian: apt-get install tesseract-ocr) or set builtin.tesseract_cmd"
            )
        done = self._run([binary, "--version"], None, timeout=60)
        if done.returncode != 0:
            raise ModelLoadFailed(f"{binary} --version failed: {_last_line(done.stderr)}")
        return binary

    def _list_languages(self) -> set[str]:
        done = self._run([self._binary, "--list-langs"], None, timeout=60)
        if done.returncode != 0:
            raise ModelLoadFailed(f"tesseract --list-langs failed: {_last_line(done.stderr)}")
        # The first line is 'List of available languages in "...":'; then one name per line.
        lines = done.stdout.decode("utf-8", "replace").splitlines()
        return {line.strip() for line in lines if line.strip() and not line.startswith("List of")}

    def recognise(self, image: Image.Image) -> list[str]:
        text = self._tesseract(image).replace("\f", "\n")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def recognise_lines(self, image: Image.Image) -> list[OcrLine]:
        """Words with their boxes and confidences (tesseract's TSV), as lines in its paragraphs."""
        return tesseract_lines(self._tesseract(image, "tsv"))

    def _tesseract(self, image: Image.Image, *config: str) -> str:
        png = io.BytesIO()
        image.save(png, format="PNG")
        # "stdin"/"stdout" are tesseract's own names for the standard streams (tesseract >= 4).
        args = [self._binary, "stdin", "stdout", "-l", self.languages, "--psm", str(self.psm), *config]
        done = self._run(args, png.getvalue(), timeout=TESSERACT_TIMEOUT_S)
        if done.returncode != 0:
            raise OcrdError(f"tesseract failed on the image: {_last_line(done.stderr)}")
        return done.stdout.decode("utf-8", "replace")

    def _run(self, args: list[str], stdin: bytes | None, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise OcrdError(f"tesseract did not finish within {timeout:.0f} s") from exc
        except OSError as exc:  # e.g. not executable
            raise ModelLoadFailed(f"cannot run {args[0]}: {exc.strerror or exc}") from exc


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"
