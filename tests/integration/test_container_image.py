"""ocrd's container image (packaging/container/Containerfile), built and run on the real Docker engine.

``scripts/build-container-image --local-base`` builds it as a user would, FROM a Debian base that
the script makes here with mmdebstrap and ``docker import`` (no registry is reachable here, so the
public python base is not what is tested). The base is tagged by a hash of its recipe and kept:
made once per machine (about a minute), reused afterwards. The image itself is built for every
run (2-3 minutes on a busy 2-core machine, mostly pip making the wheelhouse) and removed
afterwards with every container these tests start (and their anonymous volumes), whatever
happened. Without a Docker engine the tests skip, or fail under ``OCRD_REQUIRE_DOCKER=1`` (CI).

One container, run as a user would run it (``--init``, the port published on 127.0.0.1, the
Hugging Face cache and the state directory as volumes in a temporary directory, a configuration
file mounted read-only), serves the checks; the clean stop gets a container of its own.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ocrd.config.tokens import hash_token
from tests.support.cache_layout import cache_model
from tests.support.render import char_accuracy

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PREFIX = "ocrd-image-test"  # every container and image these tests make is named after it
RUN = secrets.token_hex(4)  # this run's: the image's tag, the build's id, the containers' label
LABEL = {PREFIX: RUN}
OCRD_UID = 10001  # the Containerfile's default OCRD_UID
BUILD_TIMEOUT_S = 1200  # the base (first run), the wheelhouse and the build
UP_TIMEOUT_S = 60
HTTP_TIMEOUT_S = 120  # a first request loads its model
API_KEY = "ocrd-image-test-" + secrets.token_hex(16)
CACHED_REPO = "ocrd-image-test/in-the-volume"
HF_PATH, STATE_PATH = "/var/cache/huggingface", "/var/lib/ocrd"  # the image's volumes


def expected_text(image: str) -> str:
    """The text block under ``## <image>`` in examples/README.md (what the image holds)."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(image)}\n+```text\n(.*?)\n```", text, re.S | re.M)
    assert match, f"examples/README.md has no text block for {image}"
    return match.group(1)


@pytest.fixture(scope="module")
def image(docker_engine: Any) -> Iterator[str]:
    """The image, built by the script with the local base; removed afterwards."""
    tag, build_id = f"local/{PREFIX}:{RUN}", f"{PREFIX}-{RUN}"
    command = [str(REPO / "scripts" / "build-container-image"), "--local-base", "--tag", tag,
               "--build-id", build_id]
    try:
        code, output = _run_script(command)
        assert code == 0, f"the build failed:\n{output[-4000:]}"
        yield tag
    finally:
        # Last of the module: every container is gone by now (their fixtures and tests remove
        # them); anything left is removed, then reported.
        containers = docker_engine.containers.list(all=True, filters={"label": f"{PREFIX}={RUN}"})
        for container in containers:
            _remove(container)
        _remove_image(docker_engine, tag)
        # The script prunes its build's intermediate images itself.
        images = docker_engine.images.list(all=True, filters={"label": f"ocrd.container.build={build_id}"})
        for leftover in images:
            docker_engine.images.remove(leftover.id, force=True)
        assert not containers, f"containers left behind: {[c.name for c in containers]}"
        assert not images, f"the build left intermediate images behind: {[i.id for i in images]}"


def _run_script(command: list[str]) -> tuple[int, str]:
    """Runs the build script; on a timeout it gets SIGTERM first, so that its own clean-up (the
    temporary directory, the build's intermediate images) runs before anything is killed."""
    # The script's pip runs in a venv made from this interpreter (3.11+, as ocrd needs).
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True,
                               env={**os.environ, "PYTHON": sys.executable})
    try:
        output, _ = process.communicate(timeout=BUILD_TIMEOUT_S)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        return -1, f"{output}\n(stopped after {BUILD_TIMEOUT_S}s)"


def _remove_image(client: Any, tag: str) -> None:
    from docker.errors import ImageNotFound

    try:
        client.images.remove(tag, force=True)
    except ImageNotFound:
        pass


@dataclass
class Served:
    container: Any
    base_url: str
    hf_home: Path
    state_dir: Path


class Volumes:
    """The cache, the state directory and the configuration file, in a temporary directory.

    The image's user must own the two directories (ocrd refuses a state_dir others may write);
    a root helper container hands them over, so this works for a test that is not root, and hands
    them back at the end, so that pytest can delete them."""

    def __init__(self, client: Any, image: str, root: Path):
        self.client, self.image = client, image
        self.hf_home, self.state_dir, self.config = root / "hf", root / "state", root / "ocrd.toml"
        self.hf_home.mkdir()
        self.state_dir.mkdir()
        # Read by ocrd only if the file is mounted where the image says: API keys make that visible.
        self.config.write_text(f'[[http.api_keys]]\nname = "test"\nhash = "{hash_token(API_KEY)}"\n')
        self.config.chmod(0o644)

    def mounts(self) -> dict[str, dict[str, str]]:
        return {str(self.hf_home): {"bind": HF_PATH, "mode": "rw"},
                str(self.state_dir): {"bind": STATE_PATH, "mode": "rw"},
                str(self.config): {"bind": "/etc/ocrd/ocrd.toml", "mode": "ro"}}

    def hand_over(self, uid: int) -> None:
        # Mounted on the image's VOLUME paths: any path left unmounted would get an anonymous
        # volume, which outlives the container.
        script = f"chown -R {uid}:{uid} {HF_PATH} {STATE_PATH} && chmod 0700 {STATE_PATH}"
        helper = self.client.containers.run(
            self.image, entrypoint=["sh", "-c", script], user="0", detach=True,
            labels=LABEL, name=f"{PREFIX}-chown-{secrets.token_hex(4)}",
            volumes={str(self.hf_home): {"bind": HF_PATH, "mode": "rw"},
                     str(self.state_dir): {"bind": STATE_PATH, "mode": "rw"}})
        try:
            assert helper.wait(timeout=60)["StatusCode"] == 0, _logs(helper)
        finally:
            _remove(helper)


@pytest.fixture(scope="module")
def served(docker_engine: Any, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    volumes = Volumes(docker_engine, image, tmp_path_factory.mktemp("container"))
    # A model in the cache the host sees, to find it again inside.
    cache_model(volumes.hf_home / "hub", CACHED_REPO, {"model_type": "llava"})
    volumes.hand_over(OCRD_UID)
    container = None
    try:
        container = _run(docker_engine, image, volumes)
        yield Served(container, _wait_until_up(container), volumes.hf_home, volumes.state_dir)
    finally:
        if container is not None:
            _remove(container)
        volumes.hand_over(os.getuid())


def _run(client: Any, image: str, volumes: Volumes) -> Any:
    # Only the check's interval is the test's (every 2 s instead of 30 s); its command is the
    # image's, which the daemon merges in when `test` is left out.
    return client.containers.run(
        image, detach=True, init=True, name=f"{PREFIX}-{secrets.token_hex(4)}", labels=LABEL,
        ports={"8000/tcp": ("127.0.0.1", None)}, volumes=volumes.mounts(),
        healthcheck={"interval": 2 * 10**9, "retries": 3})


def _wait_until_up(container: Any) -> str:
    """The published port's base URL once GET /health answers 200 there."""
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            raise AssertionError(f"the container {container.status}:\n{_logs(container)}")
        published = container.attrs["NetworkSettings"]["Ports"].get("8000/tcp")
        if published:
            base_url = f"http://127.0.0.1:{published[0]['HostPort']}"
            try:
                if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                    return base_url
            except httpx.HTTPError:
                pass  # not listening yet
        time.sleep(0.3)
    raise AssertionError(f"/health did not answer within {UP_TIMEOUT_S}s:\n{_logs(container)}")


def _remove(container: Any) -> None:
    # v=True: with any anonymous volume it has (never a bind mount or a named volume).
    container.remove(force=True, v=True)


def _logs(container: Any) -> str:
    return container.logs().decode(errors="replace")[-4000:]


def _exec(container: Any, *command: str) -> str:
    code, output = container.exec_run(list(command))
    text = output.decode(errors="replace")
    assert code == 0, f"{' '.join(command)} exited {code}: {text}"
    return text


def test_the_image_declares_its_user_port_volumes_and_healthcheck(docker_engine, image):
    config = docker_engine.images.get(image).attrs["Config"]
    assert config["User"] == "ocrd"
    assert config["Entrypoint"] == ["ocrd", "serve"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert set(config["Volumes"]) == {HF_PATH, STATE_PATH}
    assert config["Healthcheck"]["Test"] == ["CMD", "/opt/ocrd/bin/python", "/opt/ocrd/healthcheck.py"]


def test_health_answers_and_the_images_healthcheck_turns_healthy(served):
    assert httpx.get(f"{served.base_url}/health", timeout=5).json()["status"] == "ok"
    # The check can fail: asked about a port where nothing listens, it says unhealthy.
    code, output = served.container.exec_run(["/opt/ocrd/bin/python", "/opt/ocrd/healthcheck.py"],
                                             environment={"OCRD_HTTP__PORT": "1"})
    assert code == 1, output
    image_check = served.container.image.attrs["Config"]["Healthcheck"]["Test"]
    assert served.container.attrs["Config"]["Healthcheck"]["Test"] == image_check
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        served.container.reload()
        health = served.container.attrs["State"]["Health"]
        if health["Status"] == "healthy":
            return
        assert health["Status"] == "starting", health["Log"]
        time.sleep(0.5)
    raise AssertionError(f"not healthy within {UP_TIMEOUT_S}s: {health}")


def test_ppocr_reads_the_sample_through_the_published_port(served):
    # The mounted ocrd.toml asks for an API key: without one the API refuses.
    anonymous = httpx.get(f"{served.base_url}/v1/models", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=API_KEY, timeout=HTTP_TIMEOUT_S)
    text = client.chat.completions.create(model="ppocr", messages=[_image_message("sample.png")]
                                          ).choices[0].message.content
    assert char_accuracy(expected_text("sample.png"), text or "") >= 0.95, text


def test_tesseract_reads_russian_inside_the_container(served):
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=API_KEY, timeout=HTTP_TIMEOUT_S)
    text = client.chat.completions.create(model="tesseract", messages=[_image_message("sample-ru.png")]
                                          ).choices[0].message.content
    assert char_accuracy(expected_text("sample-ru.png"), text or "") >= 0.90, text


def _image_message(name: str) -> Any:
    data = base64.b64encode((EXAMPLES / name).read_bytes()).decode()
    return {"role": "user", "content": [{"type": "image_url",
                                         "image_url": {"url": f"data:image/png;base64,{data}"}}]}


def test_every_process_runs_as_the_unprivileged_user(served):
    top = served.container.top(ps_args="-eo pid,uid,args")
    rows = [dict(zip(top["Titles"], process, strict=True)) for process in top["Processes"]]
    assert any("ocrd serve" in row["COMMAND"] for row in rows), rows
    assert any("ocrd.worker" in row["COMMAND"] for row in rows), rows  # runners, too
    assert {row["UID"] for row in rows} == {str(OCRD_UID)}, rows
    assert _exec(served.container, "id", "-u").strip() == str(OCRD_UID)


def test_state_and_cache_are_the_mounted_volumes(served):
    mounts = {m["Destination"]: m["Type"] for m in served.container.attrs["Mounts"]}
    assert mounts == {HF_PATH: "bind", STATE_PATH: "bind", "/etc/ocrd/ocrd.toml": "bind"}, mounts
    # ocrd made its jobs database in the state volume, as the image's user.
    jobs = served.state_dir / "jobs"
    assert jobs.is_dir() and jobs.stat().st_uid == OCRD_UID, list(served.state_dir.iterdir())
    # The control plane answers inside, on the socket ocrctl finds without being told.
    assert "builtin/ppocr" in _exec(served.container, "ocrctl", "status")
    # The cache ocrd inventories is the mounted one: the model put there from the host is in it.
    listing = _exec(served.container, "ocrctl", "cache", "ls")
    assert CACHED_REPO in listing and "/var/cache/huggingface/hub" in listing, listing


def test_the_container_stops_cleanly(docker_engine, image, tmp_path):
    volumes = Volumes(docker_engine, image, tmp_path)
    volumes.hand_over(OCRD_UID)
    container = None
    try:
        container = _run(docker_engine, image, volumes)
        _wait_until_up(container)
        container.stop(timeout=60)
        # 0: ocrd drained and stopped its runners itself (a stop that ran out of time is 137).
        assert container.wait(timeout=10)["StatusCode"] == 0, _logs(container)
        assert "ocrd stopped" in _logs(container)
    finally:
        if container is not None:
            _remove(container)
        volumes.hand_over(os.getuid())

