"""What every command module shares: how a command is registered and how it prints."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from google.protobuf.message import Message

from ocrctl import render
from ocrctl.client import Client

Run = Callable[[Client, argparse.Namespace], int]


def add_command(
    commands: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    name: str,
    summary: str,
    run: Run,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=summary, parents=[common])
    parser.set_defaults(run=run)
    return parser


def print_json(message: Message, *, compact: bool = False) -> None:
    print(render.json_text(message, compact=compact), flush=compact)
