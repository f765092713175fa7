"""Damaged scans with known text: pages from ``render.render_text_image``, spoiled reproducibly.

Each damage is a pure function of the page and a seed (numpy's ``default_rng``), so a test or a
benchmark run sees the very same pixels every time. The damages are the ones real scans and
phone photos bring: impulse (salt-and-pepper) noise, a page fed in slightly rotated, low
contrast with uneven lighting, blur, and heavy JPEG compression.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from tests.support.render import render_text_image

ENGLISH = [
    "Invoice 2026-118 for the repair of the north wing roof.",
    "Labour: 14 hours at 62.50 EUR per hour, materials extra.",
    "Payment is due within thirty days of the date above.",
    "Questions about this invoice go to the office in Leeds,",
    "open Monday to Friday from 9 am to 5 pm (closed in August).",
    "Thank you for choosing Hartley & Sons, builders since 1921.",
]
RUSSIAN = [
    "Счёт номер 118 за ремонт крыши северного крыла.",
    "Работа: 14 часов по 62,50 евро в час, материалы отдельно.",
    "Оплата в течение тридцати дней с указанной даты.",
    "Вопросы по счёту направляйте в контору в Лидсе,",
    "с понедельника по пятницу с девяти до пяти часов.",
]
SEED = 20261206


def page(lines: list[str], font_size: int = 28) -> Image.Image:
    """The clean page: ``lines`` black on white, greyscale."""
    return Image.open(io.BytesIO(render_text_image(lines, font_size=font_size))).convert("L")


def salt_and_pepper(image: Image.Image, density: float, seed: int = SEED) -> Image.Image:
    """``density`` of the pixels set to black or white (half each), independently at random."""
    rng = np.random.default_rng(seed)
    pixels = np.array(image.convert("L"))
    hit = rng.random(pixels.shape)
    pixels[hit < density / 2] = 0
    pixels[(hit >= density / 2) & (hit < density)] = 255
    return Image.fromarray(pixels)


def skew(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated counter-clockwise by ``degrees`` (as a page fed in crooked), white filled in."""
    return image.convert("L").rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


def uneven_light(image: Image.Image, seed: int = SEED) -> Image.Image:
    """Low contrast (ink at ~90, paper at ~200) under a left-to-right shadow, plus faint grain."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    height, width = pixels.shape
    light = np.linspace(0.55, 1.0, width, dtype=np.float32)[None, :] * np.linspace(
        0.9, 1.0, height, dtype=np.float32)[:, None]
    grey = (90 + pixels * 110) * light + rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))


def blur(image: Image.Image, radius: float = 1.6) -> Image.Image:
    return image.convert("L").filter(ImageFilter.GaussianBlur(radius))


def jpeg(image: Image.Image, quality: int = 12) -> Image.Image:
    out = io.BytesIO()
    image.convert("L").save(out, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("L")


@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[Image.Image], Image.Image]
    skew_degrees: float = 0.0  # the rotation applied, for tests of the skew detector


DAMAGES = (
    Damage("clean", lambda image: image),
    Damage("salt-and-pepper 2%", lambda image: salt_and_pepper(image, 0.02)),
    Damage("salt-and-pepper 5%", lambda image: salt_and_pepper(image, 0.05)),
    Damage("salt-and-pepper 10%", lambda image: salt_and_pepper(image, 0.10)),
    Damage("skew 1.5°", lambda image: skew(image, 1.5), 1.5),
    Damage("skew -3.5°", lambda image: skew(image, -3.5), -3.5),
    Damage("low contrast, uneven light", uneven_light),
    Damage("blur", blur),
    Damage("JPEG q12", jpeg),
)


def damage(name: str) -> Damage:
    for candidate in DAMAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def to_rgb(image: Image.Image) -> Image.Image:
    """As the builtin engine receives images (the runner decodes to RGB)."""
    return image.convert("RGB")
