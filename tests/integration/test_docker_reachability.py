"""``docker_client`` on a host whose Docker socket takes no connection: a one-line reason, found
without importing the Docker SDK (the daemon asks before READY; the import costs ~70 ms)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

PROBE = ("import sys; from ocrd.runners.vllm.docker_host import docker_client; "
         "print(docker_client(2.0)); print('docker' in sys.modules)")


def probe(environ: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **environ},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_no_socket_is_a_reason_without_the_sdk(tmp_path: Path):
    missing = tmp_path / "docker.sock"
    reason, imported = probe({"DOCKER_HOST": f"unix://{missing}"})
    assert reason == f"Docker is not reachable: cannot connect to {missing}: No such file or directory"
    assert imported == "False"


def test_a_socket_nobody_listens_on_is_a_reason_without_the_sdk(tmp_path: Path):
    stale = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as bound:  # bound, never listening: connect is refused
        bound.bind(str(stale))
        reason, imported = probe({"DOCKER_HOST": f"unix://{stale}"})
    assert reason == f"Docker is not reachable: cannot connect to {stale}: Connection refused"
    assert imported == "False"


def test_a_socket_that_takes_the_connection_goes_to_the_sdk(tmp_path: Path):
    # Something listens but is not Docker: the SDK is asked, and its answer is the reason.
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(8)
        result = subprocess.run(
            [sys.executable, "-c", PROBE.replace("docker_client(2.0)", "docker_client(0.5)")],
            env={**os.environ, "DOCKER_HOST": f"unix://{path}"}, capture_output=True, text=True,
            timeout=60)
    reason, imported = result.stdout.splitlines()
    assert reason.startswith("Docker is not reachable: ") and "cannot connect to" not in reason
    assert imported == "True"
