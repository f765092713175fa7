#!/usr/bin/env python3
"""Start-up and builtin-OCR overhead of ocrd, measured side by side in one run.

1. Time from `ocrd serve` to READY=1 (read on a NOTIFY_SOCKET this script owns), the CPU time
   the daemon had used by then (steadier than the wall time on a shared machine), and the
   daemon's idle RSS once ready (no model loaded). ``--baseline REV`` starts ocrd as committed
   at REV in turn with the working tree's (``git archive``), side by side in one run.
2. Builtin OCR throughput: the same images OCR'd (a) by rapidocr called directly in this process
   with the settings ocrd's ppocr runner uses, and (b) through ocrd's HTTP API (proxy + runner
   process), alternating image by image after one warm-up each. Reported as images/s and their
   ratio.

    .venv/bin/python bench/startup.py [--images 8] [--repeats 3] [--startups 5] [--baseline REV]

Numbers depend on the machine; only the ratios are meant to travel. Record results in
docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baseline import checkout
from tests.support.render import render_text_image

LINES = [
    "Invoice 2024-117 for services rendered in March",
    "Total due within thirty days: 1,250.00 EUR",
    "Please quote the reference number with your payment",
    "Thank you for choosing a daemon that just works",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Daemon:
    """`ocrd serve` in a temp dir, with a NOTIFY_SOCKET to time READY=1."""

    def __init__(self, workdir: Path, tree: Path = REPO):
        self.port = free_port()
        self.workdir = workdir
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        config = workdir / "ocrd.toml"
        config.write_text(
            f'runtime_dir = "{workdir}/run"\nstate_dir = "{workdir}/state"\n[http]\nport = {self.port}\n'
            f'[grpc]\nsocket = "{workdir}/ocrd.sock"\n'
        )
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify_path)}
        self.started = time.perf_counter()
        # `python -m ocrd` imports ocrd from its working directory: the tree under test.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ocrd", "serve", "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree,
        )
        self.ready_after = self._wait_ready()
        self.cpu_at_ready = cpu_seconds(self.process.pid)
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> float:
        self.notify.settimeout(60)
        while True:
            message = self.notify.recv(4096).decode()
            if "READY=1" in message.splitlines():
                return time.perf_counter() - self.started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.notify.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_startup(count: int, trees: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """Per tree: seconds to READY, CPU seconds by then, idle RSS; the trees take turns (each
    round starting with the next one)."""
    names = list(trees)
    found: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "rss": []} for name in names}
    for round_number in range(count):
        turn = round_number % len(names)
        for name in names[turn:] + names[:turn]:
            with tempfile.TemporaryDirectory(prefix="ocrd-bench-", dir="/tmp") as tmp:
                daemon = Daemon(Path(tmp), trees[name])
                found[name]["wall"].append(daemon.ready_after)
                found[name]["cpu"].append(daemon.cpu_at_ready)
                time.sleep(0.5)  # let start-up allocations settle before reading RSS
                found[name]["rss"].append(rss_bytes(daemon.process.pid))
                daemon.stop()
    return found


def ocr_throughput(url: str, images: list[bytes], repeats: int) -> tuple[float, float]:
    """Images per second (direct rapidocr, through ocrd), measured alternately image by image so
    that whatever else the machine does weighs on both alike.

    Direct: rapidocr in this process, configured like ocrd's ppocr runner. Through ocrd: the
    OpenAI endpoint (base64 upload, validation, proxy, runner process, JSON back).
    """
    from rapidocr import RapidOCR

    from ocrd.config.settings import BuiltinSettings

    side = BuiltinSettings().ppocr_det_limit_side_len
    ocr = RapidOCR(params={"Det.limit_type": "max", "Det.limit_side_len": side})
    decoded = [Image.open(io.BytesIO(png)).convert("RGB") for png in images]
    bodies = [
        {"model": "ppocr", "messages": [{"role": "user", "content": [{"type": "image_url",
         "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}]}]}
        for png in images
    ]
    direct = proxied = 0.0
    with httpx.Client(base_url=url, timeout=300) as client:
        client.post("/v1/chat/completions", json=bodies[0]).raise_for_status()  # load + warm-up
        ocr(decoded[0])  # warm-up
        for _ in range(repeats):
            for image, body in zip(decoded, bodies, strict=True):
                started = time.perf_counter()
                ocr(image)
                direct += time.perf_counter() - started
                started = time.perf_counter()
                client.post("/v1/chat/completions", json=body).raise_for_status()
                proxied += time.perf_counter() - started
    count = repeats * len(images)
    return count / direct, count / proxied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startups", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also start ocrd as committed at REV")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # An installed ocrd starts from bytecode (pip compiles it); a checkout under
    # PYTHONDONTWRITEBYTECODE=1 would compile every module on every start: ~0.4 s here, which is
    # the checkout's cost, not the daemon's.
    import compileall

    with tempfile.TemporaryDirectory(prefix="ocrd-bench-tree-") as trees_dir:
        trees = {"ocrd": REPO}
        if args.baseline:
            trees[f"ocrd {args.baseline}"] = checkout(args.baseline, Path(trees_dir) / "baseline")
        for tree in trees.values():
            compileall.compile_dir(str(tree / "ocrd"), quiet=1)
        startups = bench_startup(args.startups, trees)
    images = [render_text_image(LINES[i % len(LINES):] + LINES[: i % len(LINES)])
              for i in range(args.images)]
    with tempfile.TemporaryDirectory(prefix="ocrd-bench-", dir="/tmp") as tmp:
        daemon = Daemon(Path(tmp))
        try:
            direct, proxied = ocr_throughput(daemon.url, images, args.repeats)
        finally:
            daemon.stop()
    startup = startups["ocrd"]["wall"]
    result = {
        "startup_to_ready_s": {"median": statistics.median(startup), "min": min(startup),
                               "max": max(startup), "runs": len(startup)},
        "startup_cpu_s": {name: {"median": statistics.median(found["cpu"]), "min": min(found["cpu"])}
                          for name, found in startups.items()},
        "startup_to_ready_median_s": {name: statistics.median(found["wall"])
                                      for name, found in startups.items()},
        "idle_rss_mib": statistics.median(startups["ocrd"]["rss"]) / 2**20,
        "ppocr_images_per_s": {"direct_rapidocr": direct, "through_ocrd": proxied,
                               "ratio_ocrd_over_direct": proxied / direct},
        "images": args.images, "repeats": args.repeats, "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
