"""``ocrctl models`` (everything ocrd can serve) and ``ocrctl unload MODEL``."""

from __future__ import annotations

import argparse

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    add_command(commands, common, "models", "every model ocrd can serve, loaded or not", run_models)
    unload = add_command(commands, common, "unload", "unload a model and free its memory", run_unload)
    unload.add_argument("model", metavar="MODEL", help="model id or alias")


def run_models(client: Client, args: argparse.Namespace) -> int:
    listing = client.call("ListModels", pb.ListModelsRequest(), pb.ListModelsResponse)
    if args.json:
        print_json(listing)
        return 0
    rows = [
        [m.id, ", ".join(m.aliases) or "-", m.engine, render.state(m.state), _license(m), m.description]
        for m in listing.models
    ]
    print(render.table(["MODEL", "ALIASES", "ENGINE", "STATE", "LICENSE", "DESCRIPTION"], rows))
    # A licence that restricts use is marked "*" in the table and said in full below it.
    for m in listing.models:
        if m.license_note:
            print(f"* {m.id}: {m.license_note}")
    return 0


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
