"""Commands whose RPCs arrive with later milestones: ``mode explain``, ``gpu``, ``cache``,
``pull``, ``cleanup``.

They are wired to their RPCs now, so that they work the day the daemon implements them; until
then the daemon answers UNIMPLEMENTED and ocrctl prints its one-line reason (exit 1). Answers are
shown as JSON until these commands learn their own tables.
"""

from __future__ import annotations

import argparse

from ocrctl.client import Client, follow
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

    add_command(commands, common, "gpu", "GPU devices, their memory and who holds it", run_gpu)

    cache_summary = "the shared Hugging Face cache"
    cache = commands.add_parser("cache", help=cache_summary, description=cache_summary)
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    add_command(cache_commands, common, "ls", "cached repositories, revisions and sizes", run_cache_ls)
    rm = add_command(cache_commands, common, "rm", "delete a model from the cache", run_cache_rm)
    rm.add_argument("model", metavar="MODEL")
    rm.add_argument("--revision", default="", help="only this revision")
    rm.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    rm.add_argument("--force", action="store_true", help="unload the model first if it is loaded")

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


def run_gpu(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("GetGpu", pb.GetGpuRequest()))
    return 0


def run_cache_ls(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("ListCache", pb.ListCacheRequest()))
    return 0


def run_cache_rm(client: Client, args: argparse.Namespace) -> int:
    request = pb.DeleteCacheRequest(
        model=args.model, revision=args.revision, dry_run=args.dry_run, force=args.force
    )
    print_json(client.call("DeleteCache", request))
    return 0


def run_pull(client: Client, args: argparse.Namespace) -> int:
    request = pb.PullModelRequest(model=args.model, revision=args.revision)
    for step in follow(client.stream("PullModel", request)):
        print_json(step, compact=True)
    return 0


def run_cleanup(client: Client, args: argparse.Namespace) -> int:
    print_json(client.call("Cleanup", pb.CleanupRequest(dry_run=args.dry_run)))
    return 0
