"""``ocrctl cache ls`` (the shared Hugging Face cache: repos, revisions, sizes, who loads them),
``ocrctl cache rm MODEL`` (delete a model or one revision from it) and ``ocrctl cache verify
MODEL`` (is every file there and whole; exit 1 when not)."""

from __future__ import annotations

import argparse
import sys

from ocrctl import render
from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cache_summary = "the shared Hugging Face cache"
    cache = commands.add_parser("cache", help=cache_summary, description=cache_summary)
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    add_command(cache_commands, common, "ls", "cached repositories, revisions and sizes", run_cache_ls)
    rm = add_command(cache_commands, common, "rm", "delete a model from the cache", run_cache_rm)
    rm.add_argument("model", metavar="MODEL", help="model id, alias or Hugging Face repo id")
    rm.add_argument("--revision", default="", help="only this revision (commit or ref)")
    rm.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.add_argument("--force", action="store_true", help="unload the model first if it is loaded")
    verify = add_command(cache_commands, common, "verify", "check that a cached model is whole",
                         run_cache_verify)
    verify.add_argument("model", metavar="MODEL", help="model id, alias or Hugging Face repo id")
    verify.add_argument("--revision", default="", help="only this revision (commit or ref)")


def run_cache_ls(client: Client, args: argparse.Namespace) -> int:
    listing = client.call("ListCache", pb.ListCacheRequest(), pb.ListCacheResponse)
    if args.json:
        print_json(listing)
        return 0
    rows = []
    for repo in listing.repos:
        name = repo.repo_id if repo.repo_type in ("", "model") else f"{repo.repo_type}:{repo.repo_id}"
        revisions = ", ".join(
            rev.commit[:8] + (f" ({', '.join(rev.refs)})" if rev.refs else "") for rev in repo.revisions
        )
        rows.append([
            name, revisions or "-", render.size(repo.size_bytes),
            render.ago(render.timestamp_or_none(repo, "last_accessed")),
            repo.loaded_by_engine or "-", "yes" if repo.in_catalog else "no",
        ])
    print(render.table(["REPO", "REVISIONS", "SIZE", "LAST USED", "LOADED BY", "IN CATALOG"], rows))
    count = len(listing.repos)
    print(f"{count} repo{'s' if count != 1 else ''}, {render.size(listing.total_bytes)} "
          f"in {listing.cache_dir}")
    return 0


def run_cache_rm(client: Client, args: argparse.Namespace) -> int:
    what = args.model + (f" at {args.revision}" if args.revision else "")
    if not args.yes and not args.dry_run:
        if not sys.stdin.isatty():
            print(f"ocrctl: not deleting {what} without confirmation: stdin is not a terminal; "
                  "pass --yes", file=sys.stderr)
            return 1
        answer = input(f"delete {what} from the Hugging Face cache? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    request = pb.DeleteCacheRequest(
        model=args.model, revision=args.revision, dry_run=args.dry_run, force=args.force
    )
    result = client.call("DeleteCache", request, pb.DeleteCacheResponse)
    if args.json:
        print_json(result)
        return 0
    if args.dry_run:
        print(f"would free {render.size(result.freed_bytes)} ({result.freed_bytes} bytes) "
              f"deleting {what}:")
        for path in result.deleted_paths:
            print(f"  {path}")
    else:
        print(f"deleted {what}: freed {render.size(result.freed_bytes)} ({result.freed_bytes} bytes)")
    return 0


def run_cache_verify(client: Client, args: argparse.Namespace) -> int:
    request = pb.VerifyCacheRequest(model=args.model, revision=args.revision)
    result = client.call("VerifyCache", request, pb.VerifyCacheResponse)
    if args.json:
        print_json(result)
    else:
        print(result.repo_id)
        for rev in result.revisions:
            name = rev.commit[:12] + (f" ({', '.join(rev.refs)})" if rev.refs else "")
            files = f"{rev.files_checked} file{'s' if rev.files_checked != 1 else ''}"
            if not rev.problems:
                print(f"  {name}: {files}, ok")
                continue
            count = len(rev.problems)
            print(f"  {name}: {files}, {count} problem{'s' if count != 1 else ''}")
            for problem in rev.problems:
                print(f"    {problem.file}: {problem.problem}")
    if result.ok:
        return 0
    revision = f" --revision {args.revision}" if args.revision else ""
    raise CommandError(
        f"{result.repo_id} is damaged in the cache: remove it with 'ocrctl cache rm {args.model}"
        f"{revision}', then fetch it again with 'ocrctl pull {args.model}{revision}'"
    )
