#!/usr/bin/env python3
"""Replicas: PP-OCR pages per second through ocrd with ``[models."builtin/ppocr"] replicas`` = 1
against 2 (or ``--replicas``), on this machine's cores.

Two daemons, one per replica count, each with its model loaded before anything is timed; rounds
alternate between them, so that whatever else the machine does weighs on both alike. A round is
``--clients`` threads each sending ``--pages`` OCR requests (a rendered four-line English page,
as in bench/startup.py) one after another over the OpenAI endpoint; pages/s is the round's pages
over its wall time. One replica gets onnxruntime's default threads (all cores); with several,
each gets its share of the cores (what the daemon sets for replicas).

    .venv/bin/python bench/replicas.py [--rounds 5] [--clients 4] [--pages 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "builtin/ppocr"
LINES = ["The quick brown fox jumps", "over the lazy dog near", "the river bank at dawn", "while birds sing loudly"]


def one_round(base_url: str, body: dict, clients: int, pages: int) -> float:
    import httpx

    def client_run(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=120) as http:
            for _ in range(pages):
                response = http.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                if "fox" not in response.json()["choices"][0]["message"]["content"]:
                    raise SystemExit("the OCR answer lost the text")
        return pages

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(client_run, range(clients)))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pages", type=int, default=6, help="requests per client per round")
    parser.add_argument("--replicas", type=int, default=2, help="the count compared with 1")
    args = parser.parse_args()

    from tests.support.daemon import ocr_messages, running_daemon
    from tests.support.render import render_text_image

    body = {"model": MODEL, "messages": ocr_messages(render_text_image(LINES))}
    rates: dict[int, list[float]] = {1: [], args.replicas: []}
    with running_daemon({"models": {MODEL: {"replicas": 1}}}) as one, \
            running_daemon({"models": {MODEL: {"replicas": args.replicas}}}) as many:
        daemons = {1: one, args.replicas: many}
        for daemon in daemons.values():
            result = daemon.ocrctl("load", MODEL)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            one_round(daemon.base_url, body, args.clients, 1)  # warm-up
        for _ in range(args.rounds):
            for count, daemon in daemons.items():
                rates[count].append(one_round(daemon.base_url, body, args.clients, args.pages))
    medians = {count: statistics.median(values) for count, values in rates.items()}
    for count, value in medians.items():
        print(f"replicas={count}: {value:.2f} pages/s (rounds: {', '.join(f'{v:.2f}' for v in rates[count])})")
    print(f"ratio {args.replicas} replicas / 1: {medians[args.replicas] / medians[1]:.2f}")


if __name__ == "__main__":
    main()
