"""Page clean-up for the builtin engines, decided per page from measurements of the page itself.

Three measurements, cheap next to recognition (together 35-75 ms on an A4 page at 200-300 dpi,
up to ~170 ms with the steps they call for, against 5-7 s to read the page; docs/benchmarks.md):

* **Impulse noise**: the share of pixels darker (or lighter) than all eight of their neighbours
  by more than ``IMPULSE_STEP`` grey levels. Rendered or scanned text has none (a stroke pixel
  always has stroke neighbours); salt-and-pepper noise of density d shows 0.3-0.4 d. Above
  ``NOISY`` the page gets a 3x3 median filter, repeated while the measure stays above it.
* **Skew**: the angle at which the horizontal projection of the ink is sharpest (text lines
  fall into few rows), searched over +-``MAX_SKEW`` degrees, coarse then fine. Beyond
  ``MIN_SKEW`` the page is turned back, keeping its size (boxes stay in the page's frame).
* **Lighting**: the paper's brightness estimated under the text (a grey closing on a reduced
  copy). Where it is uneven or dim (``UNEVEN`` / ``DIM``) the page is divided by it, so paper
  becomes white everywhere and ink keeps its contrast against the paper around it.

A clean page measures no noise, no skew and even white paper, and is returned untouched (the very
same image object), so preprocessing never changes what a clean page reads. The backends differ
in what they need (``PROFILES``, measured in bench/damaged_scans.py and docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

MODES = ("auto", "off")

IMPULSE_STEP = 64  # grey levels an isolated pixel differs from all its neighbours by
NOISY = 0.002  # share of impulse pixels from which a page is denoised
MAX_MEDIAN_PASSES = 3
MAX_SKEW = 6.0  # degrees searched either way
MIN_SKEW = 0.5  # degrees below which a page is left as it is
SKEW_SIDE = 1200  # the skew is measured on a copy whose longest side is at most this
SKEW_SAMPLES = 60_000  # ink pixels the projections use at most
MIN_INK = 400  # fewer ink pixels than this: no text to measure a skew on
LIGHT_SIDE = 400  # the paper's brightness is estimated on a copy this size
UNEVEN = 40  # grey levels between the paper's brightest and darkest tenth
DIM = 200  # paper darker than this (median) counts as dim


@dataclass(frozen=True)
class Profile:
    """The steps a backend benefits from."""

    denoise: bool = True
    deskew: bool = True
    flatten: bool = True


# PP-OCR reads skewed lines (its detector boxes them as they lie) and low-contrast text as well
# as straight, well-lit ones; only impulse noise costs it characters (docs/benchmarks.md).
PROFILES = {
    "ppocr": Profile(deskew=False, flatten=False),
    "tesseract": Profile(),
}


@dataclass(frozen=True)
class Prepared:
    image: Image.Image
    steps: tuple[str, ...] = field(default=())  # what was done and why, for the log


def prepare(image: Image.Image, profile: Profile) -> Prepared:
    """``image`` cleaned up as its measurements call for; unchanged (the same object) if clean."""
    grey = np.asarray(image.convert("L"))
    steps: list[str] = []
    if profile.denoise:
        grey = _denoise(grey, steps)
    if profile.flatten:
        grey = _flatten(grey, steps)
    if profile.deskew:
        grey = _deskew(grey, steps)
    if not steps:
        return Prepared(image)
    return Prepared(Image.fromarray(grey).convert(image.mode if image.mode in ("RGB", "L") else "RGB"),
                    tuple(steps))


# --- impulse noise --------------------------------------------------------------------------------

_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8)


def impulse_share(grey: np.ndarray) -> float:
    """The share of pixels darker or lighter than all eight neighbours by ``IMPULSE_STEP``."""
    darkest, lightest = cv2.erode(grey, _RING), cv2.dilate(grey, _RING)
    pepper = cv2.subtract(darkest, grey) > IMPULSE_STEP  # saturating: no wrap-around
    salt = cv2.subtract(grey, lightest) > IMPULSE_STEP
    return (np.count_nonzero(pepper) + np.count_nonzero(salt)) / grey.size


def _denoise(grey: np.ndarray, steps: list[str]) -> np.ndarray:
    share = impulse_share(grey)
    passes = 0
    while share > NOISY and passes < MAX_MEDIAN_PASSES:
        grey = cv2.medianBlur(grey, 3)
        passes += 1
        share = impulse_share(grey)
    if passes:
        steps.append(f"median 3x3 x{passes} (impulse noise)")
    return grey


# --- lighting ---------------------------------------------------------------------------------------


def paper_light(grey: np.ndarray) -> np.ndarray:
    """The paper's brightness under the text, on a reduced copy (float32, at most LIGHT_SIDE)."""
    scale = min(1.0, LIGHT_SIDE / max(grey.shape))
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
    # A closing wider than a letter (~1/40 of the copy) fills the ink with the paper around it.
    size = max(3, round(max(small.shape) / 40) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    light = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    return cv2.GaussianBlur(light.astype(np.float32), (0, 0), size / 2)


def _flatten(grey: np.ndarray, steps: list[str]) -> np.ndarray:
    light = paper_light(grey)
    low, median, high = np.percentile(light, (10, 50, 90))
    if high - low < UNEVEN and median >= DIM:
        return grey
    full = cv2.resize(light, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR)
    flat = np.clip(grey.astype(np.float32) * (255.0 / np.maximum(full, 1.0)), 0, 255).astype(np.uint8)
    steps.append(f"lighting flattened (paper {low:.0f}..{high:.0f})")
    return flat


# --- skew -------------------------------------------------------------------------------------------


def skew_angle(grey: np.ndarray) -> float:
    """The text's rotation in degrees, counter-clockwise positive (as ``Image.rotate``); 0 if the
    page has too little ink to tell."""
    scale = min(1.0, SKEW_SIDE / max(grey.shape))
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
    _, ink = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    ys, xs = np.nonzero(ink)
    if len(xs) < MIN_INK:
        return 0.0
    if len(xs) > SKEW_SAMPLES:
        pick = np.random.default_rng(0).choice(len(xs), SKEW_SAMPLES, replace=False)
        xs, ys = xs[pick], ys[pick]
    x, y = xs.astype(np.float32), ys.astype(np.float32)
    best = _sharpest(x, y, np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, 0.25))
    return _sharpest(x, y, np.arange(best - 0.25, best + 0.25 + 1e-9, 0.025))


def _sharpest(x: np.ndarray, y: np.ndarray, angles: np.ndarray) -> float:
    """The angle whose row profile has the most energy. A line turned counter-clockwise by a
    rises to the right (y falls as x grows), so y + x tan(a) is constant along it."""
    scores = []
    offset = float(np.abs(x).max()) * math.tan(math.radians(MAX_SKEW + 1)) + 1
    for angle in angles:
        rows = (y + x * math.tan(math.radians(angle)) + offset).astype(np.int32)
        counts = np.bincount(rows).astype(np.float64)
        scores.append(float(np.dot(counts, counts)))
    return float(angles[int(np.argmax(scores))])


def _deskew(grey: np.ndarray, steps: list[str]) -> np.ndarray:
    angle = skew_angle(grey)
    if abs(angle) < MIN_SKEW:
        return grey
    height, width = grey.shape
    paper = int(np.percentile(grey, 90))
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), -angle, 1.0)
    steps.append(f"deskewed {angle:+.2f} degrees")
    return cv2.warpAffine(grey, turn, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=paper)
