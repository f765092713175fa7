"""``ocrctl cleanup``: unloads idle models, ends orphaned runners and containers."""

from __future__ import annotations

import argparse

from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cleanup = add_command(
        commands, common, "cleanup", "unload idle models, end orphaned runners", run_cleanup
    )
    cleanup.add_argument("--dry-run", action="store_true", help="show what would be done")


def run_cleanup(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("Cleanup", pb.CleanupRequest(dry_run=args.dry_run)))
    return 0
