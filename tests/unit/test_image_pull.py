"""ocrd.runners.vllm.image_pull's pure parts: the Docker engine's pull messages as steps, its errors as ocrd's
(each with the status code ocrctl reports), the steps as PullImageProgress messages, and how
`ocrctl pull-image` draws them on a terminal.

The messages and error texts are the engine's own, recorded from Docker 20.10 pulling from a
local registry, a refused port and Docker Hub without network (the integration tests in
tests/integration/test_pull_image.py produce the first ones live)."""

from __future__ import annotations

import io

import pytest

from ocrctl.commands.pull_image import _Display
from ocrd.control import convert
from ocrd.control.v1 import control_pb2 as pb
from ocrd.errors import ImageNotFound, InvalidRequest, PermissionDenied, RegistryUnavailable
from ocrd.runners.vllm.image_pull import ImagePullStep, pull_error, step_from_message

IMAGE = "127.0.0.1:5055/ocrd-test/pullme:v1"


def test_a_layer_download_message_gives_its_layer_and_byte_counts():
    message = {"status": "Downloading", "progressDetail": {"current": 36445, "total": 3001192},
               "progress": "[>      ]  36.45kB/3.001MB", "id": "beea3cb1f693"}
    assert step_from_message(IMAGE, message) == ImagePullStep(
        image=IMAGE, layer="beea3cb1f693", status="Downloading", current_bytes=36445,
        total_bytes=3001192)


def test_layer_milestones_have_their_layer_and_no_byte_counts():
    message = {"status": "Pull complete", "progressDetail": {}, "id": "beea3cb1f693"}
    assert step_from_message(IMAGE, message) == ImagePullStep(
        image=IMAGE, layer="beea3cb1f693", status="Pull complete")


def test_messages_about_the_whole_image_have_no_layer():
    # "Pulling from" names the tag in its id: that is not a layer.
    assert step_from_message(IMAGE, {"status": "Pulling from ocrd-test/pullme", "id": "v1"}).layer == ""
    digest = step_from_message(IMAGE, {"status": "Digest: sha256:b23f"})
    assert (digest.layer, digest.status) == ("", "Digest: sha256:b23f")


@pytest.mark.parametrize(("text", "status", "kind", "code"), [
    ('Get "http://localhost:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused', 500,
     RegistryUnavailable, "UNAVAILABLE"),
    ('Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
     '10.255.255.53:53: no such host', 500, RegistryUnavailable, "UNAVAILABLE"),
    ("manifest for 127.0.0.1:5055/ocrd-test/nothere:v1 not found: manifest unknown: manifest unknown",
     404, ImageNotFound, "NOT_FOUND"),
    ("pull access denied for nobody/nothing, repository does not exist or may require "
     "'docker login': denied: requested access to the resource is denied", 404,
     ImageNotFound, "NOT_FOUND"),
    ("unauthorized: authentication required", 500, PermissionDenied, "PERMISSION_DENIED"),
    ("invalid reference format: repository name must be lowercase", 400, InvalidRequest,
     "INVALID_ARGUMENT"),
])
def test_engine_errors_become_one_line_with_the_right_code(text, status, kind, code):
    error = pull_error(IMAGE, text, status)
    assert type(error) is kind and error.grpc_code == code
    assert "\n" not in error.message
    assert text in error.message  # the engine's own words, for whoever debugs it


def test_errors_reported_inside_the_stream_are_classified_by_their_text():
    # Mid-stream errors have no HTTP status: the text alone decides.
    assert type(pull_error(IMAGE, "manifest unknown")) is ImageNotFound
    assert type(pull_error(IMAGE, "read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout")) is RegistryUnavailable


def test_each_error_says_what_to_do():
    assert pull_error(IMAGE, "connection refused", 500).message.endswith(
        "check that this host reaches the registry (network, proxy, DNS), or copy the image over "
        "with `docker save` and `docker load`")
    assert pull_error(IMAGE, "manifest unknown", 404).message.endswith("check the name and tag")
    assert "`docker login`" in pull_error(IMAGE, "pull access denied for x", 404).message
    assert pull_error(IMAGE, "invalid reference format", 400).param == "image"


def test_steps_convert_to_pull_image_progress():
    step = ImagePullStep(image=IMAGE, done=True, image_id="sha256:1ccf", message="on this host")
    assert convert.image_pull_progress(step).done
    progress = convert.image_pull_progress(
        ImagePullStep(image=IMAGE, layer="beea", status="Extracting", current_bytes=5, total_bytes=9))
    assert (progress.image, progress.layer, progress.status, progress.current_bytes,
            progress.total_bytes, progress.done, progress.image_id) == (
        IMAGE, "beea", "Extracting", 5, 9, False, "")
    assert convert.log_line("org/model", "a line").line == "a line"


def test_on_a_terminal_one_bar_sums_up_every_layer(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the bar is cut at the terminal's width
    out = io.StringIO()
    display = _Display(out, tty=True)
    for layer, status, current, total in [("aaa", "Pulling fs layer", 0, 0), ("bbb", "Already exists", 0, 0),
                                          ("aaa", "Downloading", 512 * 1024, 2 * 2**20)]:
        display.show(pb.PullImageProgress(image=IMAGE, layer=layer, status=status,
                                          current_bytes=current, total_bytes=total))
    display.end()
    drawn = out.getvalue()
    assert "\n" not in drawn[:-1]  # redrawn in place, one line break at the end
    last = drawn.rsplit("\r", 1)[-1].rstrip()
    assert last == f"{IMAGE} [############------------]  50% 1/2 layers 512 KiB/2.0 MiB"
