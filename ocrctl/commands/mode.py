"""``ocrctl mode explain MODEL``: which engine, device and quantization ocrd would choose, and why."""

from __future__ import annotations

import argparse

from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    mode = commands.add_parser("mode", help="engine choice", description="engine choice")
    mode_commands = mode.add_subparsers(dest="mode_command", metavar="COMMAND", required=True)
    explain = add_command(
        mode_commands, common, "explain", "which engine ocrd would use for a model, and why",
        run_explain,
    )
    explain.add_argument("model", metavar="MODEL")
    explain.add_argument("--mode", default="", metavar="ENGINE", help="engine preference to explain")


def run_explain(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("ExplainMode", pb.ExplainModeRequest(model=args.model, engine=args.mode)))
    return 0
