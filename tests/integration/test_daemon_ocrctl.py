"""The real ``ocrctl`` (a subprocess) over the Unix control socket of a real ``ocrd serve``, and
the standard gRPC services (health, reflection v1) on that socket.

One daemon for the module; the tests run in file order (load, then ps, then unload) and each
leaves the daemon with nothing loaded.
"""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.support.daemon import (
    RunningDaemon,
    ocr_messages,
    pid_alive,
    running_daemon,
    wait_until,
)
from tests.support.render import render_text_image

PPOCR = "builtin/ppocr"
RPC_TIMEOUT = 30.0  # hang guard


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


@pytest.fixture
def unloaded(daemon):
    """Leaves nothing loaded after the test."""
    yield daemon
    for model in daemon.ps():
        assert daemon.ocrctl("unload", model).returncode == 0


def test_load_prints_progress_then_ready_and_ps_shows_a_live_runner(unloaded):
    daemon = unloaded
    result = daemon.ocrctl("load", "ppocr")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 3, result.stdout  # progress steps, one line each off a terminal
    assert all(line.startswith(PPOCR) for line in lines)
    assert lines[-1] == f"{PPOCR} is ready"
    assert "\r" not in result.stdout

    table = daemon.ocrctl("ps")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:5] == ["MODEL", "ENGINE", "STATE", "DEVICE", "PID"]
    assert row.split()[:3] == [PPOCR, "builtin", "ready"]

    model = daemon.ps()[PPOCR]
    assert model["state"] == "MODEL_STATE_READY"
    assert pid_alive(model["pid"]) and model["pid"] in daemon.runner_pids()
    assert str(row.split()[4]) == str(model["pid"])


def test_unload_ends_the_runner_process(unloaded):
    daemon = unloaded
    assert daemon.ocrctl("load", "ppocr").returncode == 0
    pid = daemon.ps()[PPOCR]["pid"]
    assert pid_alive(pid)

    result = daemon.ocrctl("unload", "ppocr")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"unloaded {PPOCR}")
    # unload returns once the runner has stopped: no waiting needed.
    assert not pid_alive(pid)
    assert pid not in daemon.runner_pids()
    assert PPOCR not in daemon.ps()
    assert daemon.ocrctl("ps").stdout == "no models loaded\n"

    again = daemon.ocrctl("unload", "ppocr")
    assert (again.returncode, again.stdout) == (0, f"{PPOCR} was not loaded\n")


def test_status_names_the_daemon_and_its_listeners(daemon):
    result = daemon.ocrctl("status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ocrd ") and f"(pid {daemon.pid})" in result.stdout
    assert daemon.base_url in result.stdout and str(daemon.socket_path) in result.stdout
    assert str(daemon.config_path) in result.stdout

    status = json.loads(daemon.ocrctl("status", "--json").stdout)
    assert status["pid"] == daemon.pid
    assert status["http_url"] == daemon.base_url
    assert status["grpc_addresses"] == [daemon.address]
    assert status["default_model"] == PPOCR


def test_models_json_lists_every_servable_model(daemon):
    result = daemon.ocrctl("models", "--json")
    assert result.returncode == 0, result.stderr
    models = {m["id"]: m for m in json.loads(result.stdout)["models"]}
    assert set(models) == {PPOCR, "builtin/tesseract"}
    assert models[PPOCR]["aliases"] == ["ppocr"]
    assert all(m["engine"] == "builtin" for m in models.values())


def test_load_of_an_unknown_model_fails_with_one_line(daemon):
    result = daemon.ocrctl("load", "nosuch")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("ocrctl: ") and "nosuch" in result.stderr
    assert "Traceback" not in result.stderr


def test_ocrctl_against_a_stopped_daemon_says_it_is_not_running():
    daemon = RunningDaemon()
    try:
        assert daemon.stop() == 0
        result = daemon.ocrctl("status")
    finally:
        daemon.kill()
        daemon.close()
    assert result.returncode == 1
    assert result.stderr == (
        f"ocrctl: ocrd is not running at {daemon.address} "
        "(start it with 'ocrd serve' or 'systemctl start ocrd')\n"
    )


def test_grpc_health_answers_serving_on_the_control_socket(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ocrd.v1.Control"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


def test_grpc_reflection_v1_lists_the_control_service(daemon):
    # v1 and v1alpha messages are identical on the wire; the method path says which is asked.
    with grpc.insecure_channel(daemon.address) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="ocrd.v1.Control"),
        ]
        listing, control_file = list(info(iter(requests), timeout=RPC_TIMEOUT))
    names = {service.name for service in listing.list_services_response.service}
    assert {"ocrd.v1.Control", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert control_file.file_descriptor_response.file_descriptor_proto  # describe works too


def read_with_ppocr(daemon, text: str) -> None:
    """One chat request for ppocr (it loads the model when it is not loaded)."""
    with daemon.http() as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "ppocr", "messages": ocr_messages(render_text_image([text]))})
    assert answer.status_code == 200, answer.text


def test_unload_after_a_request_frees_the_runner_the_request_started(unloaded):
    daemon = unloaded
    read_with_ppocr(daemon, "auto load")
    pid = daemon.ps()[PPOCR]["pid"]
    assert daemon.ocrctl("unload", PPOCR).returncode == 0
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the runner gone")


def test_ps_after_a_fresh_load_says_never_used_not_the_previous_runners_last_use(unloaded):
    daemon = unloaded
    read_with_ppocr(daemon, "used once")
    assert daemon.ocrctl("ps").stdout.splitlines()[1].endswith(" ago")
    assert daemon.ocrctl("unload", PPOCR).returncode == 0
    assert daemon.ocrctl("load", PPOCR).returncode == 0

    header, row = daemon.ocrctl("ps").stdout.splitlines()
    assert header.endswith("LAST USED") and row.endswith(" never"), row
    assert "last_used" not in daemon.ps()[PPOCR]
