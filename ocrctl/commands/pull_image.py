"""``ocrctl pull-image [IMAGE]``: pulls the vLLM image (default: the daemon's ``vllm.image``).

ocrd never pulls an image as a side effect of a load (a vLLM image is several GB): this is the
explicit way, done by the daemon's Docker engine, with per-layer progress. Ctrl-C cancels it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ocrctl import render
from ocrctl.client import Client, CommandError
from ocrctl.commands.common import add_command
from ocrctl.commands.progress import Bar, follow_progress
from ocrd.control.v1 import control_pb2 as pb

# Layer steps worth a line of their own off a terminal (the rest is byte counts).
_LAYER_MILESTONES = {"Already exists", "Pull complete"}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    summary = "pull a Docker image for the vllm engine (ocrd never pulls implicitly)"
    parser = add_command(commands, common, "pull-image", summary, run_pull_image)
    parser.add_argument("image", nargs="?", default="", metavar="IMAGE",
                        help="image reference, e.g. vllm/vllm-openai:v0.11.2 (default: the "
                             "daemon's vllm.image)")


def run_pull_image(client: Client, args: argparse.Namespace) -> int:
    display = _Display(sys.stdout, tty=sys.stdout.isatty() and not args.json)
    last, stopped = follow_progress(
        client, "PullImage", pb.PullImageRequest(image=args.image), pb.PullImageProgress,
        as_json=args.json,
        show=display.show, end=display.end,
        stopped="stopped; the Docker engine cancels the pull (complete layers stay for next time)")
    if stopped:
        return 130
    if last is None or not last.done:
        raise CommandError(f"the pull of {args.image or 'the vLLM image'} ended before it was complete")
    if not args.json:
        print(f"pulled {last.image}: {last.image_id}")
    return 0


class _Display:
    """On a terminal one bar over every layer, redrawn in place; elsewhere a line per milestone."""

    def __init__(self, out: TextIO, *, tty: bool):
        self._out = out
        self._bar = Bar(out) if tty else None
        self._layers: dict[str, tuple[int, int, str]] = {}  # layer: (current, total, status)

    def show(self, step: pb.PullImageProgress) -> None:
        if step.done:
            return  # the summary line says it
        if step.layer:
            self._layers[step.layer] = (step.current_bytes, step.total_bytes, step.status)
        if self._bar is not None:
            self._bar.draw(self._line(step.image))
        elif not step.layer or step.status in _LAYER_MILESTONES:
            layer = f"{step.layer}: " if step.layer else ""
            print(f"{step.image}: {layer}{step.status}", file=self._out, flush=True)

    def _line(self, image: str) -> str:
        finished = sum(status in _LAYER_MILESTONES for _, _, status in self._layers.values())
        current = sum(current for current, _, _ in self._layers.values())
        total = sum(total for _, total, _ in self._layers.values())
        fraction = finished / len(self._layers) if self._layers else -1.0
        sizes = f" {render.size(current)}/{render.size(total)}" if total else ""
        return f"{image} {render.progress_bar(fraction)} {finished}/{len(self._layers)} layers{sizes}"

    def end(self) -> None:
        if self._bar is not None:
            self._bar.end()
