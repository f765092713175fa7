"""Following a progress stream (load, pull): a bar redrawn in place on a terminal, JSON lines with
``--json``, and Ctrl-C that stops watching without a traceback."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar

from google.protobuf.message import Message

from ocrctl.client import Client
from ocrctl.commands.common import print_json

Step = TypeVar("Step", bound=Message)


class Bar:
    """One line redrawn in place; ``end`` moves past it once, whatever called it first."""

    def __init__(self, out: TextIO):
        self._out = out
        self._drawn = 0  # width of the line currently on screen

    def draw(self, line: str) -> None:
        line = line[: shutil.get_terminal_size().columns - 1]
        self._out.write("\r" + line.ljust(self._drawn))
        self._out.flush()
        self._drawn = len(line)

    def end(self) -> None:
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = 0


def follow_progress(client: Client, rpc: str, request: Message, step_type: type[Step], *,
                    as_json: bool, show: Callable[[Step], None], end: Callable[[], None],
                    stopped: str) -> tuple[Step | None, bool]:
    """Streams ``rpc``, printing each step as JSON or through ``show``; returns the last step and
    whether the user pressed Ctrl-C (after printing ``stopped``, which says what ocrd does next)."""
    last: Step | None = None
    try:
        for step in client.stream(rpc, request, step_type):
            last = step
            if as_json:
                print_json(step, compact=True)
            else:
                show(step)
    except KeyboardInterrupt:
        end()
        print(f"ocrctl: {stopped}", file=sys.stderr)
        return last, True
    finally:
        end()
    return last, False
