"""``ocrctl logs MODEL [-n N] [-f]``: a loaded model's runner log (process stderr, container log).

Without ``-f`` it prints the last lines and ends; with ``-f`` it goes on printing new lines until
the runner ends (the model is unloaded or its runner dies) or Ctrl-C, which ends it quietly.
"""

from __future__ import annotations

import argparse

from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb

DEFAULT_TAIL = 100  # what the daemon sends when not told; kept here only for --help


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    summary = "show a loaded model's runner log (-f: follow it)"
    parser = add_command(commands, common, "logs", summary, run_logs)
    parser.add_argument("model", metavar="MODEL", help="model id or alias (it must be loaded)")
    parser.add_argument("-n", "--tail", type=_line_count, default=None, metavar="N",
                        help=f"show the last N lines first (default {DEFAULT_TAIL}; 0: none)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new lines until the model unloads (Ctrl-C stops)")


def _line_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the number of lines must be 0 or more")
    return value


def run_logs(client: Client, args: argparse.Namespace) -> int:
    request = pb.LogsRequest(model=args.model, follow=args.follow)
    if args.tail is not None:
        request.tail = args.tail
    try:
        for line in client.stream("Logs", request, pb.LogLine):
            if args.json:
                print_json(line, compact=True)
            else:
                print(line.line, flush=True)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one stops following: not an error
    return 0
