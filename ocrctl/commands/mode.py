"""``ocrctl mode explain MODEL``: which engine, device and quantization ocrd would choose, and why.

The daemon's planner decides (the same decision a load would use now); this prints the decision
on one line and every reason behind it as a bullet. A model that does not fit is an answer, not an
error: exit 0 either way. So is a catalog model not downloaded yet: planned from the catalog's sizes,
its first reason says how to pull it.
"""

from __future__ import annotations

import argparse

from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb

_QUANT_WORDS = {"none": "unquantized", "8bit": "8-bit", "4bit": "4-bit"}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    mode = commands.add_parser("mode", help="engine choice", description="engine choice")
    mode_commands = mode.add_subparsers(dest="mode_command", metavar="COMMAND", required=True)
    explain = add_command(
        mode_commands, common, "explain", "which engine ocrd would use for a model, and why",
        run_explain,
    )
    explain.add_argument("model", metavar="MODEL", help="model id or alias")
    explain.add_argument("--mode", default="", metavar="ENGINE",
                         help="explain this engine: builtin, transformers or vllm; default: ocrd chooses")
    explain.add_argument("--quant", default="", metavar="QUANT",
                         help="explain this quantization: none, 8bit or 4bit; default: ocrd chooses")


def run_explain(client: Client, args: argparse.Namespace) -> int:
    request = pb.ExplainModeRequest(model=args.model, engine=_auto(args.mode), quantization=_auto(args.quant))
    answer = client.call("ExplainMode", request, pb.ExplainModeResponse)
    if args.json:
        print_json(answer)
    else:
        print(format_decision(answer))
    return 0


def format_decision(answer: pb.ExplainModeResponse) -> str:
    """``MODEL: transformers on cuda:0, 8-bit, about 3.9 GiB`` (or ``MODEL: does not fit ...``),
    then each reason as a bullet."""
    if answer.fits:
        if answer.engine == "vllm":
            how = f"gpu_memory_utilization {answer.gpu_memory_utilization:.2f}"
        else:
            how = _QUANT_WORDS.get(answer.quantization, answer.quantization)
        size = f", about {_gib(answer.estimated_bytes)}" if answer.estimated_bytes else ""
        head = f"{answer.model}: {answer.engine} on {answer.device}, {how}{size}"
    elif answer.shortfall_bytes:
        head = f"{answer.model}: does not fit: {_gib(answer.shortfall_bytes)} missing on {answer.device}"
        if answer.evictable_models:
            head += f"; unloading {', '.join(answer.evictable_models)} would make room"
    else:
        head = f"{answer.model}: cannot be loaded on this host"
    return "\n".join([head, *(f"  - {reason}" for reason in answer.reasons)])


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.1f} GiB"


def _auto(choice: str) -> str:
    return "" if choice.lower() == "auto" else choice
