#!/usr/bin/env python3
"""What ocrd costs as a proxy, against nginx as the yardstick, side by side in one run.

A stub OpenAI server (raw ASGI on uvicorn with httptools: a fixed completion, or 64 SSE chunks
and ``[DONE]``) is reached three ways: directly, through nginx (Debian's ``nginx-light``, one
worker, keep-alive to the stub, no buffering), and through ocrd (``[[upstreams]]``). The stub and
both proxies run on one core, the load generator (aiohttp, one keep-alive connection per client)
on the other. Every request carries the same 27 KB body: a 20 KB PNG as a data URL.

Rounds interleave the three targets (direct, nginx, ocrd) so that whatever else the machine does
weighs on all alike; each figure is the median over rounds of the paired difference (or ratio)
with the direct round next to it:

* added latency, non-stream, 1 client (p50 of each round's requests);
* added time to the first chunk, stream, 1 client;
* proxy CPU per request, 32 clients (the proxy's utime + stime from /proc over the round);
* requests/s and stream chunks/s through the proxy as a share of direct, 32 clients.

    apt-get install nginx-light            # the yardstick
    .venv/bin/pip install -e '.[bench]'    # aiohttp, httptools for the stub
    .venv/bin/python bench/proxy.py [--rounds 5] [--seconds 3] [--requests 200] [--baseline REV]

``--baseline REV`` adds a fourth target, ocrd as committed at REV (``git archive``, run with the
same venv), to the same interleaved rounds: a change's effect measured side by side rather than
against a figure from another day. Record the printed table in docs/benchmarks.md with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baseline import checkout, load_module
from tests.support.daemon import RunningDaemon

MODEL = "bench/stub"
CHUNKS = 64
SERVER_CORE, CLIENT_CORE = 0, 1

STUB = r'''
import json, sys
import uvicorn

MODEL = sys.argv[2]
CHUNKS = int(sys.argv[3])
MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}).encode()
COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "text " * 20},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}).encode()
CHUNK = b"data: " + json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "delta": {"content": "text "}, "finish_reason": None}]}).encode() + b"\n\n"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/models"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": MODELS})
        return
    if b'"stream": true' in body or b'"stream":true' in body:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(CHUNKS):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": COMPLETION})


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="asyncio",
            log_level="warning", access_log=False)
'''

NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    upstream stub {{ server 127.0.0.1:{stub}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout:g}s")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (and of their threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def pin(pid: int, core: int) -> None:
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {core})
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), {core})


def request_body(stream: bool) -> bytes:
    """27 KB: a 20 KB PNG (noise compresses badly) as a data URL, plus the chat around it."""
    image = Image.effect_noise((82, 82), 90).convert("RGB")
    png = io.BytesIO()
    image.save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    return json.dumps({"model": MODEL, "stream": stream, "max_tokens": 20, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Extract the text."},
                                     {"type": "image_url", "image_url": {"url": url}}]}]}).encode()


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]  # the proxy's processes (none for direct)


@dataclass
class Round:
    seconds: float
    latencies: list[float]  # per request: whole answer (non-stream) or first chunk (stream)
    requests: int
    chunks: int
    cpu: float  # the proxy's CPU seconds over the round


async def one_request(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool
                      ) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.post(url + "/v1/chat/completions", data=body,
                            headers={"content-type": "application/json"}) as response:
        if response.status != 200:
            raise SystemExit(f"{url}: HTTP {response.status}: {(await response.text())[:300]}")
        if not stream:
            await response.read()
            return time.perf_counter() - started, 0
        first, chunks = None, 0
        async for line in response.content:
            if line.startswith(b"data: "):
                if first is None:
                    first = time.perf_counter() - started
                if line.strip() != b"data: [DONE]":
                    chunks += 1
        return first or 0.0, chunks


async def run_round(target: Target, body: bytes, stream: bool, clients: int, requests: int,
                    seconds: float) -> Round:
    latencies: list[float] = []
    chunks = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await one_request(session, target.url, body, stream)  # warm: connections made
        cpu_before = cpu_seconds(target.pids)
        started = time.perf_counter()

        async def client(done: Callable[[], bool]) -> None:
            nonlocal chunks
            while not done():
                latency, got = await one_request(session, target.url, body, stream)
                latencies.append(latency)
                chunks += got

        if clients == 1:
            await client(lambda: len(latencies) >= requests)
        else:
            deadline = started + seconds
            await asyncio.gather(*(client(lambda: time.perf_counter() >= deadline)
                                   for _ in range(clients)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(target.pids) - cpu_before
    return Round(elapsed, latencies, len(latencies), chunks, cpu)


def interleaved(targets: list[Target], rounds: int, run: Callable[[Target], Awaitable[Round]]
                ) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {target.name: [] for target in targets}
    for _ in range(rounds):
        for target in targets:
            results[target.name].append(asyncio.run(run(target)))
    return results


def paired(results: dict[str, list[Round]], name: str, figure: Callable[[Round, Round], float]
           ) -> float:
    return statistics.median(figure(mine, direct)
                             for mine, direct in zip(results[name], results["direct"], strict=True))


def start_services(workdir: Path, baseline: str | None = None) -> Services:
    stub_port, nginx_port = free_port(), free_port()
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(stub_port), MODEL, str(CHUNKS)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(stub_port)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX.format(dir=workdir, stub=stub_port, port=nginx_port))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx = subprocess.Popen([nginx_bin, "-c", str(conf), "-p", str(workdir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(nginx_port)
    config = {"upstreams": [{"model": MODEL, "url": f"http://127.0.0.1:{stub_port}/v1"}],
              "scheduler": {"queue_size": 256}}
    services = Services(stub, nginx, {}, stub_port, nginx_port)
    try:
        services.daemons["ocrd"] = RunningDaemon(config)
        if baseline is not None:
            tree = checkout(baseline, workdir / "baseline")
            # The revision's own test helper: it writes the configuration that revision reads.
            old = load_module(tree / "tests" / "support" / "daemon.py", "bench_baseline_daemon")
            services.daemons[f"ocrd {baseline}"] = old.RunningDaemon(config, env={"PYTHONPATH": str(tree)})
        for daemon in services.daemons.values():
            assert daemon.ocrctl("load", MODEL).returncode == 0, "the upstream did not load"
    except BaseException:
        services.stop()
        raise
    return services


@dataclass
class Services:
    stub: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]
    daemons: dict[str, RunningDaemon]  # by target name: "ocrd", and "ocrd REV" with --baseline
    stub_port: int
    nginx_port: int

    def stop(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
            daemon.close()
        for process in (self.nginx, self.stub):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="per 1-client round")
    parser.add_argument("--seconds", type=float, default=3.0, help="per 32-client round")
    parser.add_argument("--baseline", metavar="REV", help="also measure ocrd as committed at REV")
    args = parser.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        raise SystemExit("bench/proxy.py: nginx is the yardstick: apt-get install nginx-light")
    with tempfile.TemporaryDirectory(prefix="ocrd-bench-proxy-") as tmp:
        services = start_services(Path(tmp), args.baseline)
        try:
            nginx_pids = [services.nginx.pid, *[int(p) for p in subprocess.run(
                ["pgrep", "-P", str(services.nginx.pid)], capture_output=True, text=True).stdout.split()]]
            daemons = services.daemons
            for pid in (services.stub.pid, *nginx_pids, *(d.pid for d in daemons.values())):
                pin(pid, SERVER_CORE)
            os.sched_setaffinity(0, {CLIENT_CORE} if (os.cpu_count() or 1) > 1 else {0})
            targets = [Target("direct", f"http://127.0.0.1:{services.stub_port}", []),
                       Target("nginx", f"http://127.0.0.1:{services.nginx_port}", nginx_pids),
                       *(Target(name, d.base_url, [d.pid]) for name, d in reversed(daemons.items()))]
            table = measure(targets, args)
        finally:
            services.stop()
    print_table(table, args)
    return 0


def measure(targets: list[Target], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    proxies = [target.name for target in targets if target.name != "direct"]
    table: dict[str, dict[str, float]] = {name: {} for name in proxies}
    for stream in (False, True):
        body = request_body(stream)
        one = interleaved(targets, args.rounds, lambda t, s=stream, b=body: run_round(
            t, b, s, 1, args.requests, args.seconds))
        many = interleaved(targets, args.rounds, lambda t, s=stream, b=body: run_round(
            t, b, s, 32, args.requests, args.seconds))
        for name in proxies:
            key = "ttfc_ms" if stream else "latency_ms"
            table[name][key] = paired(one, name, lambda m, d: 1000 * (
                statistics.median(m.latencies) - statistics.median(d.latencies)))
            if stream:
                table[name]["chunks_share"] = paired(many, name, lambda m, d: (
                    m.chunks / m.seconds) / (d.chunks / d.seconds))
            else:
                table[name]["rps_share"] = paired(many, name, lambda m, d: (
                    m.requests / m.seconds) / (d.requests / d.seconds))
                table[name]["cpu_ms"] = statistics.median(1000 * r.cpu / r.requests for r in many[name])
    return table


def print_table(table: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows = [("added latency, non-stream, 1 client, p50", "latency_ms", "{:+.2f} ms"),
            ("added time to first chunk, stream, 1 client", "ttfc_ms", "{:+.2f} ms"),
            ("proxy CPU per request (32 clients)", "cpu_ms", "{:.3f} ms"),
            ("requests/s vs direct (32 clients)", "rps_share", "{:.0%}"),
            ("stream chunks/s vs direct (32 clients)", "chunks_share", "{:.0%}")]
    print(textwrap.dedent(f"""
        {args.rounds} interleaved rounds; 1 client: {args.requests} requests a round; 32 clients:
        {args.seconds:g} s a round; 27 KB bodies; stub and proxies on core {SERVER_CORE}, load on core {CLIENT_CORE}
        """))
    names = list(table)
    print("| per request | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, key, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt.format(table[name][key]) for name in names) + " |")


if __name__ == "__main__":
    sys.exit(main())
