"""``ocrctl load MODEL``: loads a model and shows its progress until it is ready."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import TextIO

from ocrctl import render
from ocrctl.client import Client, CommandError, follow
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = add_command(commands, common, "load", "load a model and wait until it is ready", run_load)
    parser.add_argument("model", metavar="MODEL", help="model id or alias")
    parser.add_argument("--pin", action="store_true", help="never unload it for idleness or evict it")
    parser.add_argument(
        "--keep-alive", type=_duration, metavar="DURATION",
        help="idle time before it unloads, e.g. 90s, 10m, 1h (0: as soon as it is idle)",
    )
    parser.add_argument("--mode", default="", metavar="ENGINE",
                        help="engine: builtin, transformers or vllm; default: ocrd chooses")
    parser.add_argument("--quant", default="", metavar="QUANT",
                        help="quantization for the transformers engine: none, 8bit or 4bit; "
                             "default: 8bit on a GPU, none on CPU")


def _duration(text: str) -> float:
    try:
        return render.parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_load(client: Client, args: argparse.Namespace) -> int:
    request = pb.LoadModelRequest(
        model=args.model, pin=args.pin, engine=_auto(args.mode), quantization=_auto(args.quant)
    )
    if args.keep_alive is not None:
        request.keep_alive_seconds = args.keep_alive
    display = _Display(sys.stdout, tty=sys.stdout.isatty() and not args.json)
    last = None
    try:
        for step in follow(client.stream("LoadModel", request)):
            last = step
            if args.json:
                print_json(step, compact=True)
            else:
                display.show(step)
    except KeyboardInterrupt:
        display.end()
        print("ocrctl: stopped watching; the load goes on in ocrd ('ocrctl ps' shows it)", file=sys.stderr)
        return 130
    finally:
        display.end()
    if last is None or last.state != pb.MODEL_STATE_READY:
        raise CommandError(f"loading {args.model} ended without the model becoming ready")
    if not args.json:
        print(f"{last.model} is ready")
    return 0


def _auto(choice: str) -> str:
    return "" if choice.lower() == "auto" else choice


class _Display:
    """One bar redrawn in place on a terminal; one plain line per step elsewhere (logs, pipes)."""

    def __init__(self, out: TextIO, *, tty: bool):
        self._out = out
        self._tty = tty
        self._drawn = 0  # width of the bar line currently on screen

    def show(self, step: pb.LoadModelProgress) -> None:
        if not self._tty:
            fields = [step.model, step.stage, render.percent(step.progress).strip(), step.message]
            print("  ".join(f for f in fields if f), file=self._out, flush=True)
            return
        detail = step.message if step.message and step.message != step.stage else ""
        line = f"{step.model} {render.progress_bar(step.progress)} {step.stage}"
        line += f": {detail}" if detail else ""
        line = line[: shutil.get_terminal_size().columns - 1]
        self._out.write("\r" + line.ljust(self._drawn))
        self._out.flush()
        self._drawn = len(line)

    def end(self) -> None:
        if self._tty and self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = 0
