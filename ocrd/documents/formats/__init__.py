"""One parser per output format of the catalog's presets (a preset's ``format``), each turning a
model's answer for one page into a ``PageLayout``: typed blocks in reading order, in page pixels.

What a format can give decides which of Mistral's options a request may use with it: boxes
(``include_blocks`` returns ``null`` without them), confidences, header/footer categories. An
option the format cannot honour is a 400 that names the models whose format can
(``ocrd.documents.service``), never a silent ignore.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ocrd.documents.formats import deepseek, doctags, dots, mineru, nanonets, ocrd_blocks, olmocr, plain
from ocrd.documents.layout import PageLayout

# (the model's answer, the page image's width and height) -> the page
Parser = Callable[[str, int, int], PageLayout]
# For formats read in several steps (MinerU: layout, then each block): (the page's PNG, its width
# and height, ask(preset, PNG) -> answer, how many asks at once) -> the page
Reader = Callable[[bytes, int, int, mineru.Ask, int], Awaitable[PageLayout]]


@dataclass(frozen=True)
class OutputFormat:
    name: str
    parse: Parser
    boxes: bool  # blocks with boxes
    confidence: bool  # word confidences
    header_footer: bool  # header and footer blocks of their own
    reader: Reader | None = None  # several asks per page instead of one answer to parse

    def can(self) -> list[str]:
        return [what for what, ok in (("boxes", self.boxes), ("confidence", self.confidence),
                                      ("header_footer", self.header_footer)) if ok]


def _read_in_steps(answer: str, width: int, height: int) -> PageLayout:
    raise AssertionError("a format read in steps has no single answer to parse")  # see OutputFormat.reader


FORMATS = {f.name: f for f in (
    OutputFormat("text", plain.parse, boxes=False, confidence=False, header_footer=False),
    # header/footer: from the layout model, when the builtin engine has it (builtin.layout).
    OutputFormat("ocrd-blocks", ocrd_blocks.parse, boxes=True, confidence=True, header_footer=True),
    OutputFormat("dots-layout", dots.parse, boxes=True, confidence=False, header_footer=True),
    OutputFormat("deepseek-grounding", deepseek.parse, boxes=True, confidence=False, header_footer=True),
    OutputFormat("olmocr", olmocr.parse, boxes=False, confidence=False, header_footer=False),
    OutputFormat("doctags", doctags.parse, boxes=True, confidence=False, header_footer=True),
    # header_footer: the page number only (a footer); the model marks no running header.
    OutputFormat("nanonets", nanonets.parse, boxes=False, confidence=False, header_footer=True),
    OutputFormat("mineru-layout", _read_in_steps, boxes=True, confidence=False, header_footer=True,
                 reader=mineru.read),
)}
