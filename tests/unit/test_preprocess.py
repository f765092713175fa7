"""The builtin engines' page clean-up (ocrd.worker.preprocess): its measurements and decisions on
the damaged pages of tests/support/damage.py. Recognition through the real engines is in
tests/integration/test_builtin_worker.py."""

from __future__ import annotations

import numpy as np
import pytest

from ocrd.worker.builtin_worker import create_engine
from ocrd.worker.engines import EngineOptionsError
from ocrd.worker.preprocess import NOISY, PROFILES, Profile, impulse_share, paper_light, prepare, skew_angle
from tests.support import damage

PAGES = {"en": damage.page(damage.ENGLISH), "ru": damage.page(damage.RUSSIAN)}
ALL_STEPS = Profile()


def grey(name: str, language: str = "en") -> np.ndarray:
    return np.asarray(damage.damage(name).apply(PAGES[language]).convert("L"))


@pytest.mark.parametrize("language", PAGES)
@pytest.mark.parametrize("density", [0.02, 0.05, 0.10])
def test_impulse_noise_is_measured_on_salt_and_pepper_pages(language: str, density: float):
    share = impulse_share(np.asarray(damage.salt_and_pepper(PAGES[language], density)))
    assert 0.3 * density < share < density  # isolated specks: most of them, never more than there are
    assert share > NOISY


@pytest.mark.parametrize("name", ["clean", "skew 1.5°", "low contrast, uneven light", "blur", "JPEG q12"])
def test_pages_without_impulse_noise_measure_none(name: str):
    assert impulse_share(grey(name)) < NOISY / 10


@pytest.mark.parametrize("language", PAGES)
@pytest.mark.parametrize("degrees", [-4.0, -2.5, -1.0, 0.0, 1.0, 1.5, 3.0, 4.0])
def test_skew_is_measured_within_half_a_degree(language: str, degrees: float):
    page = damage.skew(PAGES[language], degrees) if degrees else PAGES[language]
    assert skew_angle(np.asarray(page)) == pytest.approx(degrees, abs=0.5)


def test_skew_is_measured_through_noise_and_on_a_page_without_ink():
    noisy = damage.salt_and_pepper(damage.skew(PAGES["en"], -2.0), 0.05)
    assert skew_angle(np.asarray(noisy)) == pytest.approx(-2.0, abs=0.5)
    assert skew_angle(np.full((300, 400), 255, np.uint8)) == 0.0


def test_uneven_light_is_measured_and_flattened_to_white_paper():
    low, high = np.percentile(paper_light(grey("low contrast, uneven light")), (10, 90))
    assert high - low > 40
    flat = prepare(damage.to_rgb(damage.uneven_light(PAGES["en"])), ALL_STEPS)
    assert flat.steps and flat.steps[0].startswith("lighting flattened")
    assert np.percentile(paper_light(np.asarray(flat.image.convert("L"))), 10) > 240


@pytest.mark.parametrize("language", PAGES)
@pytest.mark.parametrize("profile", [*PROFILES, "all"])
def test_a_clean_page_is_returned_untouched(language: str, profile: str):
    image = damage.to_rgb(PAGES[language])
    done = prepare(image, ALL_STEPS if profile == "all" else PROFILES[profile])
    assert done.steps == () and done.image is image


@pytest.mark.parametrize("name", ["blur", "JPEG q12"])
def test_damage_no_step_helps_with_is_left_alone(name: str):
    image = damage.to_rgb(damage.damage(name).apply(PAGES["en"]))
    assert prepare(image, ALL_STEPS).image is image


def test_a_noisy_skewed_page_is_denoised_then_straightened():
    page = damage.salt_and_pepper(damage.skew(PAGES["en"], 2.5), 0.05)
    done = prepare(damage.to_rgb(page), PROFILES["tesseract"])
    assert [step.split(" ")[0] for step in done.steps] == ["median", "deskewed"]
    assert done.image.mode == "RGB" and done.image.size == page.size  # boxes stay in the page's frame
    cleaned = np.asarray(done.image.convert("L"))
    assert impulse_share(cleaned) < NOISY and abs(skew_angle(cleaned)) < 0.5


def test_ppocr_is_only_denoised():
    skewed = damage.to_rgb(damage.skew(PAGES["en"], 3.0))
    assert prepare(skewed, PROFILES["ppocr"]).image is skewed
    noisy = damage.to_rgb(damage.salt_and_pepper(PAGES["en"], 0.05))
    assert prepare(noisy, PROFILES["ppocr"]).steps == ("median 3x3 x1 (impulse noise)",)


def test_preprocess_option_is_auto_by_default_and_checked():
    assert create_engine("m", {"backend": "tesseract"}).preprocess == PROFILES["tesseract"]
    assert create_engine("m", {"backend": "ppocr", "preprocess": "auto"}).preprocess == PROFILES["ppocr"]
    engine = create_engine("m", {"backend": "ppocr", "preprocess": "off"})
    image = damage.to_rgb(damage.salt_and_pepper(PAGES["en"], 0.05))
    assert engine.preprocess is None and engine.prepared(image) is image
    with pytest.raises(EngineOptionsError, match="preprocess"):
        create_engine("m", {"backend": "tesseract", "preprocess": "on"})
