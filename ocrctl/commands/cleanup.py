"""``ocrctl cleanup``: unloads idle models, ends orphaned runners and containers, removes stale
runner sockets, says what that freed; ``--dry-run`` shows the same without doing it."""

from __future__ import annotations

import argparse

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cleanup = add_command(
        commands, common, "cleanup",
        "unload idle models, end orphaned runners and containers, remove stale runner sockets",
        run_cleanup,
    )
    cleanup.add_argument("--dry-run", action="store_true", help="show what would be done")


def run_cleanup(client: Client, args: argparse.Namespace) -> int:
    report = client.call("Cleanup", pb.CleanupRequest(dry_run=args.dry_run), pb.CleanupResponse)
    if args.json:
        print_json(report)
        return 0
    for action in report.actions:
        print(action)
    if report.freed_bytes:
        verb = "would free" if args.dry_run else "freed"
        print(f"{verb} {render.size(report.freed_bytes)} ({report.freed_bytes} bytes)")
    return 0
