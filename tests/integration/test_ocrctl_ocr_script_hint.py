"""``ocrctl ocr`` says which model reads an image whose script PP-OCR's model does not have: the
real ``ocrctl`` against a real ``ocrd serve`` with its builtin engines (rapidocr, tesseract with
eng+rus), on rendered Russian and English text. The OCR did run, so the exit status stays 0."""

from __future__ import annotations

import re

import pytest

from tests.support.daemon import running_daemon
from tests.support.documents import text_pdf
from tests.support.render import render_text_image

RUSSIAN = ["Счёт № 482 от 15 марта 2024 года", "Итого к оплате: 3 950 рублей"]
PROSE = ["Сегодня хорошая погода, и мы пойдём гулять в парк.", "Съешь же ещё этих мягких булок."]
ENGLISH = ["Invoice 4827 dated 15 March 2024", "Total due: 3,950.00 EUR"]
NAMES_TESSERACT = "try --model tesseract (eng+rus by default)"
CYRILLIC = re.compile("[\u0400-\u04ff]")


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_russian_read_by_ppocr_gets_a_hint_naming_tesseract(daemon, tmp_path):
    image = write(tmp_path, "ru.png", render_text_image(RUSSIAN))
    result = daemon.ocrctl("ocr", image)
    assert result.returncode == 0, result.stderr
    assert not CYRILLIC.search(result.stdout), result.stdout  # PP-OCR's model has no Cyrillic
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(rf"ocrctl: {re.escape(image)}: builtin/ppocr left \d+ of \d+ words unread; if the "
                        rf"text is in a script PP-OCR does not read \(e\.g\. Cyrillic\), {re.escape(NAMES_TESSERACT)}",
                        line), line


def test_russian_that_ppocr_reads_nothing_of_gets_the_hint_too(daemon, tmp_path):
    image = write(tmp_path, "contract.png", render_text_image(["ДОГОВОР ПОСТАВКИ",
                                                               "Поставщик обязуется передать товар"]))
    result = daemon.ocrctl("ocr", image)
    assert (result.returncode, result.stdout) == (0, "\n"), result.stderr
    assert result.stderr == (f"ocrctl: {image}: builtin/ppocr found no text; if the image has text in a "
                             f"script PP-OCR does not read (e.g. Cyrillic), {NAMES_TESSERACT}\n")


def test_english_read_by_ppocr_gets_no_hint(daemon, tmp_path):
    image = write(tmp_path, "en.png", render_text_image(ENGLISH))
    result = daemon.ocrctl("ocr", image)
    assert (result.returncode, result.stdout, result.stderr) == (0, "\n".join(ENGLISH) + "\n", "")


def test_russian_read_by_tesseract_gets_no_hint_and_its_text(daemon, tmp_path):
    image = write(tmp_path, "ru.png", render_text_image(RUSSIAN))
    result = daemon.ocrctl("ocr", "--model", "tesseract", image)
    assert (result.returncode, result.stdout, result.stderr) == (0, "\n".join(RUSSIAN) + "\n", "")


def test_a_pdf_read_by_ppocr_names_its_russian_page(daemon, tmp_path):
    pdf = write(tmp_path, "mixed.pdf", text_pdf([ENGLISH, PROSE]))
    result = daemon.ocrctl("ocr", pdf)
    assert result.returncode == 0, result.stderr
    assert "Total due: 3,950.00 EUR" in result.stdout, result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"ocrctl: {pdf}: builtin/ppocr left ") and " words unread on page 1; " in line, line
    assert line.endswith(NAMES_TESSERACT), line


def test_the_json_formats_get_the_hint_on_stderr_and_leave_stdout_json(daemon, tmp_path):
    # --format json reads through /v1/ocr, whose lines have one space between words: the lone
    # commas and full stops tell there, the runs of spaces do not (RUSSIAN has too few).
    image = write(tmp_path, "ru.png", render_text_image(PROSE))
    for flag in ("--json", "--format=json"):
        result = daemon.ocrctl("ocr", flag, image)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("{") and result.stdout.count("\n") == 1, result.stdout
        assert result.stderr.endswith(NAMES_TESSERACT + "\n"), (flag, result.stderr)
