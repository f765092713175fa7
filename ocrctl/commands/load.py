"""``ocrctl load MODEL``: loads a model and shows its progress until it is ready."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ocrctl import render
from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command
from ocrctl.commands.progress import Bar, follow_progress
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
                             "default: ocrd chooses (the least that fits on a GPU, none on the CPU)")


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
    last, stopped = follow_progress(client, "LoadModel", request, pb.LoadModelProgress, as_json=args.json,
                                    show=display.show, end=display.end,
                                    stopped="stopped watching; the load goes on in ocrd ('ocrctl ps' shows it)")
    if stopped:
        return 130
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
        self._bar = Bar(out) if tty else None

    def show(self, step: pb.LoadModelProgress) -> None:
        if self._bar is None:
            fields = [step.model, step.stage, render.percent(step.progress).strip(), step.message]
            print("  ".join(f for f in fields if f), file=self._out, flush=True)
            return
        detail = step.message if step.message and step.message != step.stage else ""
        line = f"{step.model} {render.progress_bar(step.progress)} {step.stage}"
        self._bar.draw(line + (f": {detail}" if detail else ""))

    def end(self) -> None:
        if self._bar is not None:
            self._bar.end()
