"""``ocrctl pull MODEL``: downloads a model into the shared Hugging Face cache, with progress.

ocrd does the download (into the cache its runners read), so the model lands where it will be
served from, with ocrd's HF_TOKEN and network settings. Ctrl-C stops the download unless another
client is following it.
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


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pull = add_command(commands, common, "pull", "download a model into the shared cache", run_pull)
    pull.add_argument("model", metavar="MODEL", help="model id, alias or Hugging Face repo id")
    pull.add_argument("--revision", default="",
                      help="branch, tag or commit (default: the catalog's pin, else main)")


def run_pull(client: Client, args: argparse.Namespace) -> int:
    request = pb.PullModelRequest(model=args.model, revision=args.revision)
    display = _Display(sys.stdout, tty=sys.stdout.isatty() and not args.json)
    last, stopped = follow_progress(
        client, "PullModel", request, pb.PullModelProgress, as_json=args.json, show=display.show, end=display.end,
        stopped="stopped; ocrd stops the download too unless another client is following it "
                "(nothing half-downloaded stays in the cache)")
    if stopped:
        return 130
    if last is None or not last.done:
        raise CommandError(f"the download of {args.model} ended before it was complete")
    if not args.json:
        print(f"pulled {last.model} (commit {last.commit[:12]}): {last.files_total} files, "
              f"{render.size(last.total_bytes)}, {last.message}")
    return 0


class _Display:
    """One bar redrawn in place on a terminal; elsewhere (logs, pipes) a line when a file is done."""

    def __init__(self, out: TextIO, *, tty: bool):
        self._out = out
        self._bar = Bar(out) if tty else None
        self._current = ""  # the file the bar names

    def show(self, step: pb.PullModelProgress) -> None:
        if step.done:
            return  # the summary line says it
        if self._bar is None:
            self._log(step)
            return
        if step.file:
            self._current = step.file
            return  # the summary step that follows redraws the bar
        fraction = step.downloaded_bytes / step.total_bytes if step.total_bytes else -1.0
        line = (f"{step.model} {render.progress_bar(fraction)} {step.files_done}/{step.files_total} "
                f"files {render.size(step.downloaded_bytes) if step.downloaded_bytes else '0 B'}"
                f"/{render.size(step.total_bytes)}")
        self._bar.draw(line + (f" {self._current}" if self._current else ""))

    def _log(self, step: pb.PullModelProgress) -> None:
        if step.message:
            print(f"{step.model}: {step.message}", file=self._out, flush=True)
        elif step.file and step.total_bytes and step.downloaded_bytes >= step.total_bytes:
            print(f"{step.model}: {step.file} ({render.size(step.total_bytes)}) done, "
                  f"{step.files_done}/{step.files_total} files", file=self._out, flush=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.end()
