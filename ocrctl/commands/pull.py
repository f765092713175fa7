"""``ocrctl pull MODEL``: downloads a model into the shared Hugging Face cache."""

from __future__ import annotations

import argparse

from ocrctl.client import Client, follow
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pull = add_command(commands, common, "pull", "download a model into the shared cache", run_pull)
    pull.add_argument("model", metavar="MODEL")
    pull.add_argument("--revision", default="", help="branch, tag or commit (default: main)")


def run_pull(client: Client, args: argparse.Namespace) -> int:
    request = pb.PullModelRequest(model=args.model, revision=args.revision)
    for step in follow(client.stream("PullModel", request)):
        print_json(step, compact=True)
    return 0
