"""A real ``python -m ocrd.worker`` runner in a subprocess, for the runner integration tests.

:class:`Worker` starts the runner with its stderr in a file and a thread reading its stdout (JSON
lines only) into a queue; :meth:`Worker.until_final` reads the start-up events up to ``ready`` or
``error``. Tests talk to the runner over its Unix socket with httpx, as the daemon does
(:func:`complete`, :func:`stream_events`). :func:`running` wraps a started worker for fixtures.
The timeouts are hang guards only (a broken runner must not stall the suite): nothing asserts on
speed, and each test module passes its own.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def worker_env(**extra: str) -> dict[str, str]:
    """The host environment plus ``extra``, unbuffered, one OpenMP thread, the repo importable.

    A ``PYTHONPATH`` in ``extra`` goes first, before the repo root and the host's own.
    """
    first = extra.pop("PYTHONPATH", None)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [first, str(ROOT), env.get("PYTHONPATH")]))
    return env


def temp_workdir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp, removed afterwards (Unix socket paths are limited to 107
    bytes, so pytest's long tmp_path will not do); ``yield from`` it in a fixture."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Worker:
    """A runner subprocess whose stdout JSON lines a thread reads into a queue.

    ``prefix`` goes before the runner's own command line (a parent process that starts it, say).
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        engine: str,
        options: dict,
        env: dict[str, str] | None = None,
        model_id: str,
        prefix: Sequence[str] = (),
        start_timeout: float,
        exit_timeout: float,
        client_timeout: float,
    ):
        self.model_id = model_id
        self.engine = engine
        self.socket = workdir / f"{name}.sock"
        self.stderr_path = workdir / f"{name}.stderr"
        self.start_timeout = start_timeout
        self.exit_timeout = exit_timeout
        self.client_timeout = client_timeout
        self.argv = [*prefix, sys.executable, "-m", "ocrd.worker", "--model-id", model_id, "--engine", engine,
                     "--socket", str(self.socket), "--options", json.dumps(options)]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=stderr, env=worker_env() if env is None else env, cwd=ROOT
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.events: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8"))
        self.lines.put(None)

    def next_line(self, timeout: float | None = None) -> str | None:
        """The next stdout line, None once stdout is closed; waits ``start_timeout`` by default."""
        return self.lines.get(timeout=self.start_timeout if timeout is None else timeout)

    def until_final(self) -> dict:
        """Reads events up to `ready` or `error` (or end of output); every line must be JSON."""
        while (line := self.next_line()) is not None:
            event = json.loads(line)  # stdout carries nothing but JSON lines
            self.events.append(event)
            if event["event"] in ("ready", "error"):
                return event
        raise AssertionError(f"runner ended without ready/error; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://runner", timeout=self.client_timeout)

    def info(self) -> dict:
        with self.client() as client:
            return client.get("/v1/ocrd/info").json()

    def wait(self) -> int:
        """The exit code, waiting up to ``exit_timeout``."""
        return self.proc.wait(timeout=self.exit_timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()


def running(worker: Worker) -> Iterator[Worker]:
    """Yields ``worker`` once it is ready (asserting that it is); stops it afterwards."""
    try:
        final = worker.until_final()
        assert final["event"] == "ready", f"{final}\n{worker.stderr()}"
        yield worker
    finally:
        worker.stop()


def complete(worker: Worker, body: dict) -> dict:
    with worker.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(worker: Worker, body: dict) -> list:
    """The parsed `data:` payloads of a streamed completion, "[DONE]" kept as a string."""
    events: list = []
    with worker.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
