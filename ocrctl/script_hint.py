"""A hint on stderr when ``builtin/ppocr`` was given text in a script its model does not read.

PP-OCR's bundled recogniser knows Latin letters, digits and Chinese, not Cyrillic. Given Russian it
does not fail: the detector finds the lines and the recogniser gives back what it has classes for,
the spaces and the punctuation between the words and none of their letters, so ocrd answers 200
with ", !" for "Привет, мир!". The text itself shows it, so ``ocrctl ocr`` can tell without another
request: words that came back empty (two spaces in a row where a word was) or as a lone comma or
full stop, which text PP-OCR does read hardly ever has (both are written against the word before
them, in French too). A page with many of them gets a hint naming the model that reads Russian.

The recogniser's own scores do not tell: on the images measured below (``/v1/ocr``'s
``average_page_confidence_score``) Russian pages scored 0.757-0.985 and English ones
0.955-1.000, so no threshold separates them. Missed: Russian whose every letter has a Latin twin
("Всё хорошо" reads "Bcë xopo"; tesseract with eng+rus reads it so too), and one-word Russian
cells with no punctuation ("Товар", "Цена" read "T", "Cya"). PDFs and ``--format json`` are read
through ``/v1/ocr``, whose lines have one space between words: there only the lone commas and full
stops tell, and a Russian page of numbers and letters without punctuation goes unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The models whose recogniser has no Cyrillic: the builtin PP-OCR, by its id and its alias.
PPOCR_MODELS = frozenset({"builtin/ppocr", "ppocr"})
# Share of a page's words left unread from which the hint is given. Measured on 12 Russian and 12
# English texts (prose, invoices, tables, phone numbers, headings, accented German and French),
# each rendered in DejaVu Sans 28 px, Serif 22 px and Sans Mono 36 px and read by builtin/ppocr
# through a real daemon (chat completions, as ``ocrctl ocr`` sends images): every English page
# 0.00, numbers-only ones included; Russian pages 0.08-1.00 (median 0.67) but for three that came
# back empty (their own hint) and six with nothing unread (the misses above). Also 0.00: wide gaps
# inside a line, two columns, abbreviations ("e.g. see p. 12"), dot leaders (not counted as words).
# One long Latin line that PP-OCR garbled ("e u  u o    e  i") put its page at 0.16: the hint
# there is still true, those words were left unread.
UNREAD_SHARE = 0.05
_UNREAD = frozenset({"", ",", "."})  # an empty word is a run of two spaces
_LEADER = re.compile(r"(?:^| )\.(?: \.){2,}(?= |$)")
_ADVICE = "in a script PP-OCR does not read (e.g. Cyrillic), try --model tesseract (eng+rus by default)"


def unread_words(text: str) -> tuple[int, int]:
    """(words that came back unread, all words) in ``text``: plain lines, table cells split by tabs.
    A dot leader (". . . . 5" in a table of contents) is no word."""
    unread = words = 0
    for line in text.splitlines():
        for cell in line.split("\t"):
            cell_words = _LEADER.sub("", cell).strip().split(" ")
            if cell_words != [""]:
                words += len(cell_words)
                unread += sum(word in _UNREAD for word in cell_words)
    return unread, words


def script_hint(model: str, pages: Sequence[tuple[int, str]], *, document: bool = False) -> str | None:
    """The hint for what ``model`` read: (page index, plain text) of each page read; ``document``:
    the pages are a PDF's (they are named). None when there is nothing to say."""
    if model not in PPOCR_MODELS:
        return None
    counts = [(index, *unread_words(text)) for index, text in pages]
    if counts and all(words == 0 for _, _, words in counts):
        return f"{model} found no text; if the {'document' if document else 'image'} has text {_ADVICE}"
    flagged = [(index, unread, words) for index, unread, words in counts
               if words and unread / words >= UNREAD_SHARE]
    if not flagged:
        return None
    unread, words = sum(f[1] for f in flagged), sum(f[2] for f in flagged)
    where = ""
    if document:
        where = (" on page " if len(flagged) == 1 else " on pages ") + ", ".join(str(f[0]) for f in flagged)
    return f"{model} left {unread} of {words} words unread{where}; if the text is {_ADVICE}"
