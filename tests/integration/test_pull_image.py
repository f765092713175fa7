"""`ocrctl pull-image [IMAGE]` and the PullImage RPC on a real Docker engine.

The pulls are real: a real registry (Debian's docker-registry, tests/support/registry.py) on
loopback serves an image that the engine does not have, so the engine downloads its layer and
reports progress; the failures are the engine's own answers (a registry that refuses connections,
an image the registry does not have, a malformed reference) and a Docker socket where nothing
listens. The control server and ocrctl are the real ones (ocrctl in-process, one ``ocrd serve``
for the configured default image). Timeouts are hang guards only.
"""

from __future__ import annotations

import json

import grpc
import pytest

from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from tests.support.daemon import running_daemon

pytestmark = pytest.mark.docker

HANG_GUARD = 120.0
REFUSED = "localhost:1/ocrd-test/nothing:v1"  # loopback port 1: refused at once, no DNS, no wait


async def pull(stub: control_pb2_grpc.ControlStub, image: str) -> list[pb.PullImageProgress]:
    return [step async for step in stub.PullImage(pb.PullImageRequest(image=image), timeout=HANG_GUARD)]


async def pull_error(stub: control_pb2_grpc.ControlStub, image: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await pull(stub, image)
    return failure.value


# --- pulls that work ------------------------------------------------------------------------------


async def test_pull_downloads_the_image_with_per_layer_progress(stub, docker_engine, pushed_image):
    steps = await pull(stub, pushed_image)

    last = steps[-1]
    assert last.done and last.image == pushed_image
    assert last.image_id == docker_engine.images.get(pushed_image).id  # it is on the engine now
    layers = {step.layer for step in steps if step.layer}
    assert len(layers) == 1  # the image has one layer
    downloading = [step for step in steps if step.status == "Downloading"]
    assert downloading and all(0 < s.current_bytes <= s.total_bytes for s in downloading)
    assert "Pull complete" in [step.status for step in steps if step.layer]
    assert any(step.status.startswith("Status: Downloaded newer image") for step in steps)
    assert not any(step.done for step in steps[:-1])


async def test_pulling_an_image_already_there_says_it_is_up_to_date(stub, pushed_image):
    await pull(stub, pushed_image)
    again = await pull(stub, pushed_image)
    assert any(step.status.startswith("Status: Image is up to date") for step in again)
    assert not any(step.status == "Downloading" for step in again)
    assert again[-1].done and again[-1].image_id.startswith("sha256:")


async def test_ocrctl_prints_layer_milestones_then_the_image_id(ocrctl, docker_engine, pushed_image):
    result = await ocrctl("pull-image", pushed_image)
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    image_id = docker_engine.images.get(pushed_image).id
    assert lines[-1] == f"pulled {pushed_image}: {image_id}"
    assert any(line.startswith(f"{pushed_image}: ") and line.endswith(": Pull complete") for line in lines)
    assert not any("Downloading" in line for line in lines)  # byte counts only on a terminal
    assert result.err == ""


async def test_ocrctl_json_gives_one_object_per_step(ocrctl, pushed_image):
    result = await ocrctl("pull-image", pushed_image, "--json")
    assert result.rc == 0, result.err
    steps = [json.loads(line) for line in result.out.splitlines()]
    assert steps[-1]["done"] is True and steps[-1]["image_id"].startswith("sha256:")
    assert any(step["status"] == "Downloading" and int(step["total_bytes"]) > 0 for step in steps)


def test_without_an_argument_the_daemon_pulls_its_configured_vllm_image(docker_engine, pushed_image):
    with running_daemon({"vllm": {"image": pushed_image}}) as daemon:
        result = daemon.ocrctl("pull-image")
    assert result.returncode == 0, result.stderr
    image_id = docker_engine.images.get(pushed_image).id
    assert result.stdout.splitlines()[-1] == f"pulled {pushed_image}: {image_id}"


# --- pulls that fail: one line saying what to do ---------------------------------------------------


async def test_a_registry_that_cannot_be_reached_is_unavailable(stub, ocrctl):
    error = await pull_error(stub, REFUSED)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith(f"could not pull {REFUSED}: ")
    assert "connection refused" in error.details()

    result = await ocrctl("pull-image", REFUSED)
    assert result.rc == 1 and result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith(f"ocrctl: could not pull {REFUSED}")
    assert "check that this host reaches the registry" in result.err


async def test_an_image_the_registry_does_not_have_is_not_found(stub, ocrctl, local_registry):
    missing = f"{local_registry}/ocrd-test/never-pushed:v1"
    error = await pull_error(stub, missing)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details().startswith(f"the registry has no image {missing} (")
    assert "manifest unknown" in error.details()

    result = await ocrctl("pull-image", missing)
    assert result.rc == 1
    assert result.err.startswith(f"ocrctl: the registry has no image {missing}")
    assert result.err.endswith("check the name and tag\n")


async def test_a_malformed_reference_is_invalid(stub):
    error = await pull_error(stub, "Not/A Valid:Ref")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid image reference" in error.details()


async def test_docker_that_cannot_be_reached_is_unavailable(stub, ocrctl, socket_dir, monkeypatch):
    # The daemon's Docker connection follows DOCKER_HOST, as the docker CLI's does.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_dir}/no-docker-here.sock")
    error = await pull_error(stub, "vllm/vllm-openai:v0.11.2")
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("Docker is not reachable: ")
    assert error.details().endswith("start the Docker engine (or point DOCKER_HOST at it), then pull again")

    result = await ocrctl("pull-image", "vllm/vllm-openai:v0.11.2")
    assert result.rc == 1 and result.err.startswith("ocrctl: Docker is not reachable: ")
    assert result.err.count("\n") == 1
