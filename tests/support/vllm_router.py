"""The real ``vllm-router`` binary (PyPI ``vllm-router``, in the test extra) as a subprocess.

``RunningRouter`` starts it in inference-gateway mode (``--enable-igw``: routes by the request's
``model`` among the workers registered through its ``/workers`` API) on a free port of loopback
(or of ``host``: its address on a test LAN, tests/support/netns.py), waits for its ``/health``,
and reads its worker list. ``kill()`` and ``start()`` again on the same port stand for a router
that crashed and came back with an empty list.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import daemon_env, free_port

BIN = Path(sys.executable).parent / "vllm-router"
ROUTER = str(BIN) if BIN.exists() else (shutil.which("vllm-router") or "")
START_TIMEOUT = 30.0  # hang guard: it answers /health in about 0.2 s


class RunningRouter:
    def __init__(self, log_path: Path, *extra: str, host: str = "127.0.0.1"):
        assert ROUTER, "vllm-router is not installed: pip install -e '.[test]' (constraints/test.txt)"
        self.host = host
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        command = [ROUTER, "--enable-igw", "--host", self.host, "--port", str(self.port),
                   # Its Prometheus exporter would take port 29000, which two routers cannot share.
                   "--prometheus-port", str(self.metrics_port), *self.extra]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=daemon_env())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"vllm-router did not start\n{self.log()}")
            time.sleep(0.05)

    def workers(self) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/workers", timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["workers"])

    def urls(self) -> dict[str, str]:
        """{worker URL: model id} as the router lists them."""
        return {worker["url"]: worker["model_id"] for worker in self.workers()}

    def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` on the router's Prometheus exporter (0: none yet)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def running_router(log_path: Path, *extra: str, host: str = "127.0.0.1") -> Iterator[RunningRouter]:
    router = RunningRouter(log_path, *extra, host=host)
    try:
        yield router
    finally:
        router.stop()
