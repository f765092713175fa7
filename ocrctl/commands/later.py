"""Commands whose RPCs arrive with later milestones: ``mode explain``, ``pull``, ``cleanup``
(``gpu`` and ``cache`` have arrived: ocrctl.commands.gpu, ocrctl.commands.cache).

They are wired to their RPCs now, so that they work the day the daemon implements them; until
then the daemon answers UNIMPLEMENTED and ocrctl prints its one-line reason (exit 1). Answers are
shown as JSON until these commands learn their own tables.
"""

from __future__ import annotations

import argparse

from ocrctl.client import Client, follow
from ocrctl.commands import cache, gpu
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

    gpu.register(commands, common)  # ``gpu``: ocrctl.commands.gpu

    cache.register(commands, common)  # ``cache ls`` / ``cache rm``: ocrctl.commands.cache

    pull = add_command(commands, common, "pull", "download a model into the shared cache", run_pull)
    pull.add_argument("model", metavar="MODEL")
    pull.add_argument("--revision", default="", help="branch, tag or commit (default: main)")

    cleanup = add_command(
        commands, common, "cleanup", "unload idle models, end orphaned runners", run_cleanup
    )
    cleanup.add_argument("--dry-run", action="store_true", help="show what would be done")


def run_explain(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("ExplainMode", pb.ExplainModeRequest(model=args.model, engine=args.mode)))
    return 0


def run_pull(client: Client, args: argparse.Namespace) -> int:
    request = pb.PullModelRequest(model=args.model, revision=args.revision)
    for step in follow(client.stream("PullModel", request)):
        print_json(step, compact=True)
    return 0


def run_cleanup(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("Cleanup", pb.CleanupRequest(dry_run=args.dry_run)))
    return 0
