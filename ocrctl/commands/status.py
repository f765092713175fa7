"""``ocrctl status`` (the daemon at a glance) and ``ocrctl ps`` (what is loaded, in detail)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    add_command(commands, common, "status", "the daemon's version, uptime, listeners and models", run_status)
    add_command(commands, common, "ps", "loaded models: state, memory, requests, keep-alive", run_ps)


def run_status(client: Client, args: argparse.Namespace) -> int:
    status = client.call("GetStatus", pb.GetStatusRequest(), pb.GetStatusResponse)
    if args.json:
        print_json(status)
        return 0
    print(f"ocrd {status.version} (pid {status.pid}), up {render.duration(status.uptime_seconds)}")
    print(f"HTTP API:       {status.http_url or '-'}")
    print(f"control:        {', '.join(status.grpc_addresses) or client.target}")
    print(f"config:         {status.config_path or 'built-in defaults'}")
    print(f"default model:  {status.default_model or '-'}")
    print()
    if not status.models:
        print("no models loaded ('ocrctl models' lists what ocrd can serve)")
        return 0
    rows = [
        [m.id, m.engine, render.state(m.state), m.device or "-", render.size(m.memory_bytes)]
        for m in status.models
    ]
    print(render.table(["MODEL", "ENGINE", "STATE", "DEVICE", "MEMORY"], rows))
    _print_errors(status.models)
    return 0


def run_ps(client: Client, args: argparse.Namespace) -> int:
    listing = client.call("ListModels", pb.ListModelsRequest(loaded_only=True), pb.ListModelsResponse)
    if args.json:
        print_json(listing)
        return 0
    if not listing.models:
        print("no models loaded")
    else:
        headers = ["MODEL", "ENGINE", "STATE", "DEVICE", "PID", "MEMORY", "IN-FLIGHT/QUEUED",
                   "KEEP-ALIVE", "LAST USED"]
        print(render.table(headers, [_ps_row(m) for m in listing.models]))
        _print_errors(listing.models)
    if listing.warm_runners:
        print()
        print("warm runners (take the next model of their engine; scheduler.warm_runners):")
        rows = [[w.engine, w.device, str(w.pid), render.size(w.memory_bytes), "ready" if w.ready else "warming"]
                for w in listing.warm_runners]
        print(render.table(["ENGINE", "DEVICE", "PID", "MEMORY", "STATE"], rows))
    return 0


def _ps_row(model: pb.ModelInfo) -> list[str]:
    return [
        model.id,
        model.engine,
        render.state(model.state),
        model.device or "-",
        ",".join(str(pid) for pid in model.replica_pids) or (str(model.pid) if model.pid else "-"),
        render.size(model.memory_bytes),
        f"{model.in_flight}/{model.queued}",
        "pinned" if model.pinned else render.duration(model.keep_alive_seconds),
        render.ago(render.timestamp_or_none(model, "last_used")),
    ]


def _print_errors(models: Sequence[pb.ModelInfo]) -> None:
    failed = [m for m in models if m.error]
    if failed:
        print()
    for model in failed:
        # Most errors name their model first already ("remote/ppocr: the upstream server at
        # ... cannot be reached", as a load's error reads on its own): once is enough.
        print(f"{model.id}: {model.error.removeprefix(f'{model.id}: ')}")
