"""``ocrctl.script_hint``: when builtin/ppocr's text shows words it could not read, a hint names
tesseract. The texts are what builtin/ppocr returned through a real daemon for rendered images
(tests/integration/test_ocrctl_ocr_script_hint.py runs the whole path)."""

from __future__ import annotations

import pytest

from ocrctl.script_hint import UNREAD_SHARE, script_hint, unread_words

PPOCR = "builtin/ppocr"

# builtin/ppocr's answers for rendered Russian text (the source line after each).
RUSSIAN_READ_BY_PPOCR = [
    ",\n.\nPy",  # examples/sample-ru.png: "Съешь же ещё этих мягких французских булок, ..."
    ", !",  # "Привет, мир!"
    "482  15  2024\nκ : 3 950",  # "Счёт № 482 от 15 марта 2024 года / Итого к оплате: 3 950 рублей"
    ",      .",  # "Сегодня хорошая погода, и мы пойдём гулять в парк."
    "TeeoH: +7 (495) 123-45-67\n: . , . , . 12",  # "Телефон: ... / Адрес: ул. Тверская, д. 7, кв. 12"
    "π 2 . 45,00 90,00\n1 π 89,90 89,90\nToro: 179,90",  # a receipt, "Хлеб 2 шт. 45,00 90,00" ...
]
# builtin/ppocr's answers for rendered English, German and French text: read, every word.
LATIN_READ_BY_PPOCR = [
    "Acme Paper Company, receipt 4827\n3 boxes of A4 paper at 8.25 each: 24.75",
    "Invoice 4827 dated 15 March 2024\nTotal due: 3,950.00 EUR",
    "12.50\n3.00\n15.50",
    "2024-03-15 14:32:07 #48213",
    "Grüße aus München, schöne Straße\nÇa va très bien, merci beaucoup",
    "Mr. A. B. Smith, Jr.\ne.g. see p. 12, fig. 3.",
    "Contents . . . . . . . . 5\nPreface ........9",
    "Qty Price Amount\n3 19.99 59.97\n1 4.50 4.50",
]


@pytest.mark.parametrize("text", RUSSIAN_READ_BY_PPOCR)
def test_russian_read_by_ppocr_gets_a_hint_naming_tesseract(text):
    hint = script_hint(PPOCR, [(0, text)])
    assert hint is not None and hint.startswith(f"{PPOCR} left ")
    assert hint.endswith("if the text is in a script PP-OCR does not read (e.g. Cyrillic), "
                         "try --model tesseract (eng+rus by default)")


@pytest.mark.parametrize("text", LATIN_READ_BY_PPOCR)
def test_latin_text_read_by_ppocr_gets_no_hint(text):
    assert unread_words(text)[0] == 0
    assert script_hint(PPOCR, [(0, text)]) is None


def test_the_hint_counts_the_unread_words():
    assert script_hint(PPOCR, [(0, ",\n.\nPy")]) == (
        "builtin/ppocr left 2 of 3 words unread; if the text is in a script PP-OCR does not read "
        "(e.g. Cyrillic), try --model tesseract (eng+rus by default)")


def test_empty_words_between_spaces_and_lone_commas_and_full_stops_are_unread():
    assert unread_words(",      .") == (7, 7)  # a comma, five unread words, a full stop
    assert unread_words("482  15  2024") == (2, 5)
    assert unread_words("x : ; ! ? - y") == (0, 7)  # French spaces these; they are words


def test_table_cells_and_empty_cells_are_not_unread_words():
    assert unread_words("Qty\tPrice\t\tAmount\n3\t19.99\t\t59.97") == (0, 6)


def test_nothing_read_at_all_gets_its_own_hint():
    assert script_hint(PPOCR, [(0, "")]) == (
        "builtin/ppocr found no text; if the image has text in a script PP-OCR does not read "
        "(e.g. Cyrillic), try --model tesseract (eng+rus by default)")
    assert script_hint(PPOCR, [(0, "\n"), (1, " ")], document=True).startswith(
        "builtin/ppocr found no text; if the document has text in a script")


def test_a_document_names_the_pages_left_unread_and_ignores_blank_ones():
    pages = [(0, "Invoice 4827 dated 15 March 2024"), (1, ""), (2, ", !"), (4, ",      .")]
    hint = script_hint(PPOCR, pages, document=True)
    assert hint is not None and hint.startswith("builtin/ppocr left 8 of 9 words unread on pages 2, 4; ")
    assert script_hint(PPOCR, pages[:3], document=True).startswith(
        "builtin/ppocr left 1 of 2 words unread on page 2; ")
    assert script_hint(PPOCR, pages[:2], document=True) is None


def test_a_long_page_with_one_stray_full_stop_gets_no_hint():
    words = ["word"] * 40 + ["."]
    assert 1 / len(words) < UNREAD_SHARE
    assert script_hint(PPOCR, [(0, " ".join(words))]) is None


@pytest.mark.parametrize("model", ["builtin/tesseract", "tesseract", "remote/ocr", "dots.ocr"])
def test_other_models_get_no_hint(model):
    assert script_hint(model, [(0, ",      .")]) is None
    assert script_hint(model, [(0, "")]) is None


def test_the_alias_gets_the_hint_too():
    assert script_hint("ppocr", [(0, ", !")]) is not None
