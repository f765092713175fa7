"""``ocrctl events``: follows the daemon's events until Ctrl-C."""

from __future__ import annotations

import argparse

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    summary = "follow model state changes and load progress (Ctrl-C stops)"
    parser = add_command(commands, common, "events", summary, run_events)
    parser.add_argument(
        "--model", default="", metavar="MODEL", help="only this model's events (id or alias)"
    )


def run_events(client: Client, args: argparse.Namespace) -> int:
    try:
        for event in client.stream("WatchEvents", pb.WatchEventsRequest(model=args.model), pb.Event):
            if args.json:
                print_json(event, compact=True)
            else:
                print(event_line(event), flush=True)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one stops following: not an error
    return 0


def event_line(event: pb.Event) -> str:
    stamp = render.timestamp_or_none(event, "time")
    state = render.state(event.state) if event.state != pb.MODEL_STATE_UNSPECIFIED else "-"
    fields = [
        render.clock_time(stamp) if stamp is not None else "-",
        event.kind,
        event.model or "-",
        state,
        event.message,
    ]
    return "  ".join(fields).rstrip()
