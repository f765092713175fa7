"""``ocrctl gpu``: the GPUs ocrd sees, their memory and utilisation, and who holds the memory."""

from __future__ import annotations

import argparse
import time

from ocrctl import render
from ocrctl.client import Client
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    gpu = add_command(commands, common, "gpu", "GPU devices, their memory and who holds it", run_gpu)
    gpu.add_argument(
        "--watch", type=float, default=None, metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )


def run_gpu(client: Client, args: argparse.Namespace) -> int:
    if args.watch is None:
        _show(client.call("GetGpu", pb.GetGpuRequest(), pb.GetGpuResponse), as_json=args.json)
        return 0
    try:
        while True:
            if not args.json:
                print("\033[H\033[J", end="")  # clear the terminal, as watch(1) does
            _show(client.call("GetGpu", pb.GetGpuRequest(), pb.GetGpuResponse), as_json=args.json)
            time.sleep(max(0.1, args.watch))
    except KeyboardInterrupt:
        return 0


def _show(answer: pb.GetGpuResponse, *, as_json: bool) -> None:
    if as_json:
        print_json(answer, compact=False)
        return
    print(format_gpu(answer), flush=True)


def format_gpu(answer: pb.GetGpuResponse) -> str:
    if not answer.available:
        return f"no GPU: {answer.reason or 'the daemon gave no reason'}"
    lines = [f"driver {answer.driver_version or '-'}, CUDA {answer.cuda_version or '-'}"]
    for device in answer.devices:
        lines += [
            "",
            f"GPU {device.index}: {device.name} ({device.uuid})",
            f"memory {render.size(device.used_bytes)} used / {render.size(device.total_bytes)} total,"
            f" {render.size(device.free_bytes)} free; utilisation {device.utilization_percent}%",
        ]
        if not device.processes:
            lines.append("no processes")
            continue
        rows = [
            [str(p.pid), p.model or "other", p.name or "-", render.size(p.used_bytes)]
            for p in device.processes
        ]
        lines.append(render.table(["PID", "MODEL", "PROCESS", "MEMORY"], rows))
    return "\n".join(lines)
