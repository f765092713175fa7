#!/usr/bin/env python3
"""A fault run: OCR traffic against a real ``ocrd serve`` while its runners are killed, its
configuration reloaded and its models unloaded and loaded, for a few minutes.

Clients (threads, each with its own keep-alive connection) send OCR chat requests to the builtin
models, streamed and not, without pause. Meanwhile, every few seconds, one fault at random:

* ``kill``: SIGKILL a runner process (a model dies mid-request);
* ``reload``: SIGHUP the daemon (the configuration is re-read);
* ``unload`` / ``load``: ``ocrctl unload`` / ``ocrctl load`` of a model;
* ``hostile``: one of the hardening issue's attack bodies (20 million ``{}``, a 100k-key object).

At the end: a histogram of HTTP statuses (no 500 may appear: every failure caused by a fault has
its own status, 502/503/...), requests that never answered within ``--hang`` seconds (none may),
the daemon's RSS and open descriptors after warm-up and at the end, runner sockets left, and the
daemon's exit code on SIGTERM. Exit status 1 when any of those is wrong.

    .venv/bin/python bench/fault_run.py [--duration 300] [--clients 4] [--seed 1]

Record the printed table row in docs/hardening.md (and the machine it ran on).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.daemon import RunningDaemon, assert_no_runner_survives
from tests.support.render import data_url, render_text_image

LINES = ["Fault run: the daemon keeps serving", "while its runners are killed"]
HOSTILE = {
    "20 million empty objects": b'{"model": "ppocr", "x": [' + b"{}," * 19_999_999 + b"{}]}",
    "100k keys": b'{"model": "ppocr", "x": {' + b",".join(b'"k%d": 1' % n for n in range(100_000))
                 + b"}}",
}


@dataclass
class Tally:
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    hung: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, what: str) -> None:
        with self.lock:
            self.statuses[what] += 1


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _client(daemon: RunningDaemon, models: list[str], stop: threading.Event, tally: Tally,
            hang: float, seed: int) -> None:
    pick = random.Random(seed)
    image = data_url(render_text_image(LINES))
    with httpx.Client(base_url=daemon.base_url, timeout=hang) as http:
        while not stop.is_set():
            body = {"model": pick.choice(models), "stream": pick.random() < 0.5,
                    "messages": [{"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": image}}]}]}
            try:
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = "".join(response.iter_text())
                status = str(response.status_code)
                if response.status_code == 200 and body["stream"] and '"error"' in text:
                    status = "200 (stream ended with an error event)"
                tally.status(status)
            except httpx.TimeoutException:
                with tally.lock:
                    tally.hung += 1
            except httpx.TransportError as exc:
                tally.status(f"connection error: {type(exc).__name__}")


def _fault(daemon: RunningDaemon, models: list[str], pick: random.Random, tally: Tally) -> None:
    kind = pick.choice(["kill", "kill", "reload", "unload", "load", "hostile"])
    if kind == "kill":
        runners = daemon.runner_pids()
        if not runners:
            kind = "load"
        else:
            os.kill(pick.choice(runners), signal.SIGKILL)
    if kind == "reload":
        daemon.send_signal(signal.SIGHUP)
    elif kind in ("unload", "load"):
        daemon.ocrctl(kind, pick.choice(models))
    elif kind == "hostile":
        name = pick.choice(list(HOSTILE))
        with httpx.Client(base_url=daemon.base_url, timeout=120) as http:
            status = http.post("/v1/chat/completions", content=HOSTILE[name],
                               headers={"content-type": "application/json"}).status_code
        tally.status(f"{status} (hostile body)")
    tally.faults[kind] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--fault-every", type=float, default=8.0, help="mean seconds between faults")
    parser.add_argument("--hang", type=float, default=120.0,
                        help="a request unanswered this long counts as hung")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    daemon = RunningDaemon({"scheduler": {"max_loaded_models": 2}})
    models = ["ppocr"] + (["tesseract"] if any(
        m["id"] == "builtin/tesseract" for m in json.loads(daemon.ocrctl("models", "--json").stdout)
        .get("models", [])) else [])
    for model in models:
        assert daemon.ocrctl("load", model).returncode == 0, f"cannot load {model}"
    tally, stop, pick = Tally(), threading.Event(), random.Random(args.seed)
    clients = [threading.Thread(target=_client, args=(daemon, models, stop, tally, args.hang,
                                                      args.seed + n)) for n in range(args.clients)]
    for thread in clients:
        thread.start()
    time.sleep(5.0)  # warm: every client has its connection, every model served once
    rss_before, fds_before = _rss(daemon.pid), _fds(daemon.pid)
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.duration:
            time.sleep(pick.expovariate(1.0 / args.fault_every))
            _fault(daemon, models, pick, tally)
    finally:
        stop.set()
        for thread in clients:
            thread.join(args.hang + 10)
    time.sleep(2.0)  # the last faults' effects settle (a crashed runner's socket, a reload)
    rss_after, fds_after = _rss(daemon.pid), _fds(daemon.pid)
    runner_sockets = len(list((daemon.runtime_dir / "runners").glob("*.sock")))
    live_runners = len(daemon.runner_pids())
    exit_code = daemon.stop()
    assert_no_runner_survives(daemon)
    daemon.close()

    total = sum(tally.statuses.values())
    histogram = ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items()))
    faults = ", ".join(f"{count} {kind}" for kind, count in sorted(tally.faults.items()))
    print(f"{args.duration:.0f} s, {args.clients} clients, models {', '.join(models)}")
    print(f"requests: {total} ({histogram}); hung: {tally.hung}")
    print(f"faults: {faults}")
    print(f"daemon RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB, open descriptors "
          f"{fds_before} -> {fds_after}, runner sockets left {runner_sockets} "
          f"(runners alive {live_runners}), exit code {exit_code}")
    print(f"| {time.strftime('%Y-%m-%d')} | {args.duration:.0f} s | {total} | {histogram} | "
          f"{tally.hung} | {faults} | {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB | "
          f"{fds_before} -> {fds_after} | {exit_code} |")
    failed = (tally.statuses.get("500", 0) or tally.hung or exit_code != 0
              or runner_sockets > live_runners)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
