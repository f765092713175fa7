#!/usr/bin/env python3
"""Batches below live traffic: what a running batch costs live requests, what the batch path
costs against the same requests sent directly, and the daemon's memory over a long batch.

Three measurements, on one ``ocrd serve`` with the builtin PP-OCR (one runner, one request at a
time: the case where a batch and live requests really compete):

1. Batch throughput: a batch of ``--lines`` requests from submission to completion, against the
   same requests sent directly over HTTP by ``batches.concurrency`` clients (goal: >= 0.9).
2. Live latency: ``--live`` chat requests (one image each) to ppocr with nothing else running,
   then again while a batch to the same model runs (cancelled after). Live requests come one at
   a time with a random pause of up to twice the lone request's time between them, as requests
   from people do; a client that sends its next request the instant the last one returns always
   arrives just after a batch line took the freed turn. Reported: p50 and p99 of each, and the
   ratio of the p50s (goal: within 1.5x).
3. Memory: two batches of ``--long`` lines, one after the other, to a stub OpenAI server behind
   ``[[upstreams]]`` (each line a millisecond, so the batch machinery is what runs), the daemon's
   RSS sampled each second. Reported: at the start, the peak, after each batch (goal: flat; the
   second batch must not add to what the first left).

    .venv/bin/python bench/batches.py [--live 30] [--lines 120] [--long 10000]

Numbers depend on the machine; record them in docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.proxy import STUB, free_port, wait_for_port
from tests.support.daemon import RunningDaemon, ocr_messages
from tests.support.render import render_text_image

WORDS = ["Invoice 2024-117", "Total due 1,250.00", "Quote the reference", "Thank you", "Paid in full"]
CONCURRENCY = 4


def body_for(n: int) -> dict[str, Any]:
    return {"model": "ppocr", "messages": ocr_messages(render_text_image([WORDS[n % len(WORDS)], f"line {n}"]))}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def live_latencies(daemon: RunningDaemon, count: int, pause: float) -> list[float]:
    """``count`` requests, one at a time, each after a pause drawn from [0, ``pause``] (seeded)."""
    pauses = random.Random(17)
    seconds = []
    with daemon.http(timeout=300) as http:
        for n in range(count):
            time.sleep(pauses.uniform(0, pause))
            started = time.perf_counter()
            response = http.post("/v1/chat/completions", json=body_for(10_000 + n))
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return seconds


def submit(client: Any, bodies: list[dict[str, Any]]) -> str:
    lines = b"".join(json.dumps({"custom_id": f"l-{n}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": body}).encode() + b"\n" for n, body in enumerate(bodies))
    uploaded = client.files.create(file=("batch.jsonl", io.BytesIO(lines)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def wait_done(client: Any, batch_id: str) -> Any:
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.2)


def direct_seconds(daemon: RunningDaemon, bodies: list[dict[str, Any]]) -> float:
    async def run() -> float:
        import httpx

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        async with httpx.AsyncClient(base_url=daemon.base_url, timeout=300) as client:
            async def worker() -> None:
                while not queue.empty():
                    response = await client.post("/v1/chat/completions", json=queue.get_nowait())
                    assert response.status_code == 200, response.text

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            return time.perf_counter() - started

    return asyncio.run(run())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def competing(daemon: RunningDaemon, lines: int, live: int) -> dict[str, Any]:
    bodies = [body_for(n) for n in range(lines)]
    with daemon.openai_client(timeout=300) as client:
        client.chat.completions.create(**body_for(0))  # loads the model; its first answer is slow
        direct = direct_seconds(daemon, bodies)
        started = time.perf_counter()
        batch = wait_done(client, submit(client, bodies))
        batch_seconds = time.perf_counter() - started
        assert batch.status == "completed" and batch.request_counts.completed == lines, batch

        alone = live_latencies(daemon, live, 0.0)
        pause = 2 * statistics.median(alone)
        alone = live_latencies(daemon, live, pause)
        batch_id = submit(client, [body_for(n) for n in range(lines * 4)])  # outlasts the live run
        while client.batches.retrieve(batch_id).request_counts.completed < 2:
            time.sleep(0.1)  # the batch is under way
        done_before, live_started = client.batches.retrieve(batch_id).request_counts.completed, time.perf_counter()
        beside = live_latencies(daemon, live, pause)
        live_seconds = time.perf_counter() - live_started
        during = client.batches.retrieve(batch_id)
        still_running = during.status == "in_progress"
        client.batches.cancel(batch_id)
        wait_done(client, batch_id)
    return {
        "batch_lines_per_s": lines / batch_seconds, "direct_requests_per_s": lines / direct,
        "batch_over_direct": direct / batch_seconds,
        "live_alone_p50_s": statistics.median(alone), "live_alone_p99_s": percentile(alone, 0.99),
        "live_beside_batch_p50_s": statistics.median(beside),
        "live_beside_batch_p99_s": percentile(beside, 0.99),
        "live_p50_ratio": statistics.median(beside) / statistics.median(alone),
        "batch_ran_throughout": still_running,
        # What the live traffic cost the batch: its pace while live requests came.
        "batch_lines_per_s_beside_live": (during.request_counts.completed - done_before) / live_seconds,
    }


def memory(workdir: Path, lines: int) -> dict[str, Any]:
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(port), "bench/stub", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        wait_for_port(port)
        daemon = RunningDaemon({"state_dir": workdir / "state-long",
                                "upstreams": [{"model": "bench/stub", "url": f"http://127.0.0.1:{port}/v1"}]})
        body = {"model": "bench/stub", "messages": [{"role": "user", "content": "hello"}]}
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(rss_mib(daemon.pid))
                stop.wait(1.0)

        with daemon.openai_client(timeout=300) as client:
            start_rss = rss_mib(daemon.pid)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            after: list[float] = []
            started = time.perf_counter()
            for _ in range(2):
                batch = wait_done(client, submit(client, [body] * lines))
                assert batch.request_counts.completed == lines, batch
                after.append(rss_mib(daemon.pid))
            seconds = (time.perf_counter() - started) / 2
            stop.set()
            sampler.join()
        return {"lines": lines, "seconds_per_batch": seconds, "rss_start_mib": start_rss,
                "rss_peak_mib": max(samples), "rss_after_first_mib": after[0],
                "rss_after_second_mib": after[1]}
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.close()
        stub.terminate()
        stub.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=int, default=30, help="live requests per measurement")
    parser.add_argument("--lines", type=int, default=120, help="lines of the competing batch")
    parser.add_argument("--long", type=int, default=10_000, help="lines of the memory batch (0: skip it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocrd-bench-batches-") as tmp:
        daemon = RunningDaemon({"state_dir": Path(tmp) / "state", "batches": {"concurrency": CONCURRENCY}})
        try:
            result = competing(daemon, args.lines, args.live)
        finally:
            daemon.stop()
            daemon.close()
        if args.long:
            result["memory"] = memory(Path(tmp), args.long)
    print(json.dumps({key: round(value, 3) if isinstance(value, float) else value
                      for key, value in result.items()}, indent=2))


if __name__ == "__main__":
    main()
