"""``ocrctl models`` (what this host can serve now, or with ``--all`` every model ocrd knows) and
``ocrctl unload MODEL``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb

_DOWNLOADED = {
    pb.DOWNLOAD_STATE_DOWNLOADED: "yes",
    pb.DOWNLOAD_STATE_NOT_DOWNLOADED: "no",
    pb.DOWNLOAD_STATE_PARTIAL: "partial",
    pb.DOWNLOAD_STATE_NOT_NEEDED: "-",  # builtin (ships with ocrd) or upstream (served elsewhere)
}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = add_command(
        commands, common, "models",
        "the models this host can serve now (downloaded, engine installed), loaded or not; "
        "--all: every model ocrd knows", run_models)
    models.add_argument(
        "--all", action="store_true",
        help="every model ocrd knows, downloaded or not (the whole catalog, configured upstreams "
             "and [models] tables, cached models): size, engines, whether it is in ocrd's cache")
    unload = add_command(commands, common, "unload", "unload a model and free its memory", run_unload)
    unload.add_argument("model", metavar="MODEL", help="model id or alias")


def run_models(client: Client, args: argparse.Namespace) -> int:
    listing = client.call("ListModels", pb.ListModelsRequest(all=args.all), pb.ListModelsResponse)
    if args.json:
        print_json(listing)
    elif args.all:
        print(all_models_text(listing))
    else:
        print(servable_models_text(listing))
    return 0


def servable_models_text(listing: pb.ListModelsResponse) -> str:
    rows = [
        [m.id, ", ".join(m.aliases) or "-", m.engine, render.state(m.state), _license(m), m.description]
        for m in listing.models
    ]
    lines = [render.table(["MODEL", "ALIASES", "ENGINE", "STATE", "LICENSE", "DESCRIPTION"], rows)]
    lines += _license_notes(listing.models)
    lines.append("('ocrctl models --all' lists every model ocrd knows, downloaded or not)")
    return "\n".join(lines)


def all_models_text(listing: pb.ListModelsResponse) -> str:
    """The table, then what it abbreviates: restrictive licences, the engines this host cannot
    run (in parentheses in the table) and why, the models held back by something else, and how
    to download the rest."""
    rows = [
        [m.id, render.size(m.size_bytes), _engines(m), _DOWNLOADED.get(m.download, "?"), _license(m),
         m.description]
        for m in listing.models
    ]
    lines = [render.table(["MODEL", "SIZE", "ENGINES", "DOWNLOADED", "LICENSE", "DESCRIPTION"], rows)]
    lines += _license_notes(listing.models)
    missing = {e.name: e.reason for m in listing.models for e in m.engines if not e.available}
    lines += [f"({name}): this host cannot run it now: {reason}" for name, reason in missing.items()]
    # Held back by something the columns do not show (a program such as tesseract missing, a
    # configured engine): downloaded, or nothing to download, and an engine this host runs.
    lines += [f"{m.id}: {m.unavailable_reason}" for m in listing.models
              if m.unavailable_reason and m.download in (pb.DOWNLOAD_STATE_DOWNLOADED, pb.DOWNLOAD_STATE_NOT_NEEDED)
              and any(e.available for e in m.engines)]
    if any(m.download in (pb.DOWNLOAD_STATE_NOT_DOWNLOADED, pb.DOWNLOAD_STATE_PARTIAL) for m in listing.models):
        where = f" at {listing.cache_dir}" if listing.cache_dir else ""
        lines.append(f"'ocrctl pull MODEL' downloads one (or the rest of a partial one) into ocrd's cache{where}")
    return "\n".join(lines)


def _engines(model: pb.ModelInfo) -> str:
    """In the model's order of preference; one this host cannot run now in parentheses."""
    return ", ".join(e.name if e.available else f"({e.name})" for e in model.engines) or "-"


def _license_notes(models: Sequence[pb.ModelInfo]) -> list[str]:
    # A licence that restricts use is marked "*" in the table and said in full below it.
    return [f"* {m.id}: {m.license_note}" for m in models if m.license_note]


def _license(model: pb.ModelInfo) -> str:
    return (model.license or "-") + (" *" if model.license_note else "")


def run_unload(client: Client, args: argparse.Namespace) -> int:
    result = client.call("UnloadModel", pb.UnloadModelRequest(model=args.model), pb.UnloadModelResponse)
    if args.json:
        print_json(result)
    elif result.was_loaded:
        freed = render.size(result.freed_bytes)
        print(f"unloaded {result.model}" + (f" (freed {freed})" if result.freed_bytes else ""))
    else:
        print(f"{result.model} was not loaded")
    return 0
