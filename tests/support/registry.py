"""A real Docker registry on loopback, for tests of pulling images (`ocrctl pull-image`).

No public registry is reachable from a test machine, but Debian's ``docker-registry`` package (the
CNCF distribution registry, the same server as the ``registry`` image) runs here as a plain
process. ``scripts/test`` installs it next to ``docker.io``.

Fixtures (import them into a test module to use them):

* ``local_registry`` (module): ``127.0.0.1:PORT`` of a registry storing into a temporary
  directory. Docker treats 127.0.0.0/8 registries as insecure (plain HTTP) by default, so no
  engine configuration is needed. Without the binary the test is skipped with the reason, unless
  ``OCRD_REQUIRE_DOCKER=1`` (CI), where it fails.
* ``pushed_image``: a tiny image with a layer of its own (random bytes, so the engine has none
  of it), pushed to that registry and then removed from the engine: pulling it really downloads.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.docker_engine import REQUIRE_ENV

BINARY = "docker-registry"
START_GUARD = 30.0  # hang guard: the registry answers within a second
LAYER_BYTES = 2 * 2**20  # big enough for the engine to report download progress


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary_or_skip() -> str:
    path = shutil.which(BINARY)
    if path is None:
        reason = (f"needs Debian's {BINARY} package (apt-get install {BINARY}; scripts/test "
                  f"installs it as root)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no {BINARY}: {reason}", pytrace=False)
        pytest.skip(f"{reason}; {REQUIRE_ENV}=1 makes this a failure")
    return path


@pytest.fixture(scope="module")
def local_registry() -> Iterator[str]:
    binary = _binary_or_skip()
    root = Path(tempfile.mkdtemp(prefix="ocrd-registry-"))
    address = f"127.0.0.1:{_free_port()}"
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: {address}\n")
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log)
    try:
        _wait_until_serving(address, process, root)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_serving(address: str, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + START_GUARD
    while True:
        try:
            if httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{BINARY} did not serve on {address}: "
                                 f"{(root / 'registry.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def push_new_image(client: Any, registry: str) -> str:
    """Makes an image no engine has seen (one layer of random bytes), pushes it to ``registry``
    and removes it from the engine; returns its reference."""
    reference = f"{registry}/ocrd-test/pull-me:{secrets.token_hex(4)}"
    repository, tag = reference.rsplit(":", 1)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        payload = secrets.token_bytes(LAYER_BYTES)
        entry = tarfile.TarInfo("payload.bin")
        entry.size = len(payload)
        tar.addfile(entry, io.BytesIO(payload))
    client.api.import_image_from_data(archive.getvalue(), repository=repository, tag=tag)
    for message in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in message:
            raise AssertionError(f"pushing {reference} failed: {message['error']}")
    client.images.remove(reference, force=True)
    return reference


@pytest.fixture
def pushed_image(docker_engine: Any, local_registry: str) -> Iterator[str]:
    reference = push_new_image(docker_engine, local_registry)
    yield reference
    from docker.errors import ImageNotFound

    try:
        docker_engine.images.remove(reference, force=True)
    except ImageNotFound:
        pass
