"""Progress of ``ocrctl ocr``: one line per document being read (pages done / total, pages/s),
redrawn in place on stderr when stderr is a terminal; nothing at all elsewhere (logs, pipes).

The lines sit at the bottom of the terminal, below everything written so far. A message for
stderr, or output for stdout when stdout is the same terminal, is written by erasing the lines,
writing it and drawing them again, so that a bar never ends up inside the output. One event loop
drives it: no locks.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from ocrctl import render


@dataclass
class _Document:
    name: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self, now: float, ended: bool = False) -> str:
        elapsed = now - self.started
        rate = f"{self.done / elapsed:.2f} pages/s" if self.done and elapsed > 0 else "- pages/s"
        bar = render.progress_bar(self.done / self.total if self.total else 1.0, width=20)
        return f"{bar} {self.done}/{self.total} pages {rate}{' done' if ended else ''}  {self.name}"


class DocumentBars:
    """Bars on ``err`` when ``tty``; ``out``: where results go (erased around when it is a tty too)."""

    def __init__(self, err: TextIO, out: TextIO, *, tty: bool, clock: Callable[[], float] = time.monotonic):
        self._err = err
        self._out = out
        self._tty = tty
        self._out_shares_screen = tty and out.isatty()
        self._clock = clock
        self._documents: dict[int, _Document] = {}  # by caller's key, in the order they started
        self._drawn = 0  # lines of bars on screen, the cursor at the start of the line below them

    def start(self, key: int, name: str, total: int) -> None:
        if self._tty:
            self._documents[key] = _Document(name, total, started=self._clock())
            self._redraw()

    def advance(self, key: int) -> None:
        document = self._documents.get(key)
        if document is not None:
            document.done += 1
            self._redraw()

    def end(self, key: int) -> None:
        """The document is finished: its bar stays on screen, above the ones still moving."""
        document = self._documents.pop(key, None)
        if document is not None:
            self._write_above(self._err, self._fit(document.line(self._clock(), ended=True)) + "\n")

    def drop(self, key: int) -> None:
        """The document failed: its bar goes (the error line says what happened)."""
        if self._documents.pop(key, None) is not None:
            self._redraw()

    def message(self, line: str) -> None:
        """One line on stderr (an error), above the bars."""
        self._write_above(self._err, line + "\n")

    def output(self, text: str) -> None:
        """Results, on ``out``."""
        if self._out_shares_screen:
            self._write_above(self._out, text)
        else:
            self._out.write(text)
            self._out.flush()

    def _write_above(self, stream: TextIO, text: str) -> None:
        self._erase()
        stream.write(text)
        stream.flush()
        self._draw()

    def _redraw(self) -> None:
        self._erase()
        self._draw()

    def _erase(self) -> None:
        if self._drawn:
            # To the start of the first bar, then erase to the end of the screen.
            self._err.write(f"\x1b[{self._drawn}F\x1b[J")
            self._err.flush()
            self._drawn = 0

    def _draw(self) -> None:
        if not self._documents:
            return
        now = self._clock()
        self._err.write("".join(self._fit(d.line(now)) + "\n" for d in self._documents.values()))
        self._err.flush()
        self._drawn = len(self._documents)

    @staticmethod
    def _fit(line: str) -> str:
        # Shorter than the terminal: a line that wrapped would take two rows and break the erasing.
        return line[: shutil.get_terminal_size().columns - 1]
