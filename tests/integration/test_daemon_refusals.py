"""Refusals as users see them from a real ``ocrd serve``: the HTTP status in OpenAI's error
envelope, the gRPC status code, and ocrctl's one line, for the same error.

409 Conflict / FAILED_PRECONDITION: an unload while a request holds the model. The request is held
by an upstream that answers only when the test lets it (``FakeUpstream`` "slow"), so it is in flight
for as long as the test needs, whatever the machine's speed.

507 Insufficient Storage / RESOURCE_EXHAUSTED: a load that does not fit the GPU. This machine may
have no GPU, so the daemon sees a 4 GiB one through NVML's interface (``nvml_env``: FakeNvml as
``pynvml``), and the model is a cached one of ~4B parameters (real safetensors headers, sparse
data) that needs about 5.1 GiB even in 4-bit. Everything else is real: planner, scheduler, HTTP,
gRPC, ocrctl.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from tests.support.daemon import HTTP_TIMEOUT, assert_openai_error, running_daemon, wait_until
from tests.support.fake_nvml import GIB, FakeDevice, nvml_env
from tests.support.fake_upstream import FakeUpstream
from tests.support.sized_models import cache_model, vlm_tensors

HELD = "org/held"
BIG = "org/vlm-big"
MIB = 2**20


def control(daemon) -> control_pb2_grpc.ControlStub:
    return control_pb2_grpc.ControlStub(grpc.insecure_channel(daemon.address))


def test_unload_while_a_request_holds_the_model_is_409_and_failed_precondition():
    with FakeUpstream(HELD) as upstream:
        upstream.behaviour = "slow"
        config = {"scheduler": {"drain_timeout": "1s"}, "upstreams": [{"model": HELD, "url": upstream.url}]}
        with running_daemon(config) as daemon:
            assert daemon.ocrctl("load", HELD).returncode == 0
            answers = []

            def send() -> None:
                with daemon.http() as http:
                    answers.append(http.post("/v1/chat/completions", json={
                        "model": HELD, "messages": [{"role": "user", "content": "hold"}]}))

            request = threading.Thread(target=send)
            request.start()
            try:
                wait_until(lambda: daemon.ps()[HELD]["in_flight"] == 1, timeout=60,
                           message="the request in flight")
                message = f"model {HELD!r} is still serving 1 request(s) after 1s; try again when they finish"

                with daemon.http() as http:
                    error = assert_openai_error(http.post("/models/unload", json={"model": HELD}), 409)
                assert (error["message"], error["type"]) == (message, "invalid_request_error")

                with pytest.raises(grpc.RpcError) as refused:
                    control(daemon).UnloadModel(pb.UnloadModelRequest(model=HELD), timeout=60)
                assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert refused.value.details() == message

                result = daemon.ocrctl("unload", HELD)
                assert (result.returncode, result.stderr) == (1, f"ocrctl: {message}\n")
                assert daemon.ps()[HELD]["state"] == "MODEL_STATE_READY"
            finally:
                upstream.release.set()
                request.join(HTTP_TIMEOUT)
            assert answers[0].status_code == 200, answers[0].text
            assert answers[0].json()["choices"][0]["message"]["content"] == f"fake-vllm {HELD} read: hold"
            assert daemon.ocrctl("unload", HELD).returncode == 0  # nothing holds it now


@pytest.fixture
def hub(tmp_path):
    # ~4.0B parameters: bf16 needs ~9.4 GiB with its headroom, 8-bit ~6.4 GiB, 4-bit ~5.1 GiB.
    cache_model(tmp_path, BIG, vlm_tensors(vision=256 * MIB, embeddings=512 * MIB, linear=3072 * MIB))
    return tmp_path


def test_a_load_that_does_not_fit_the_gpu_is_507_and_resource_exhausted(hub):
    card = FakeDevice("NVIDIA Test", "GPU-44444444-aaaa-bbbb-cccc-000000000000", total=4 * GIB, used=0)
    with running_daemon({"cache": {"hub_dir": hub}}, env=nvml_env(card)) as daemon:
        message = (f"cannot load {BIG}: does not fit: transformers, 4-bit needs about 5.1 GiB on cuda:0 "
                   f"but only 3.5 GiB is usable there; 1.6 GiB is missing")

        with daemon.http() as http:
            error = assert_openai_error(http.post("/models/load", json={"model": BIG}), 507)
            assert error["message"].startswith(message), error
            assert (error["type"], error["code"]) == ("server_error", "insufficient_memory")
            # A request loads its model first: the same refusal.
            chat = http.post("/v1/chat/completions", json={"model": BIG, "messages": [
                {"role": "user", "content": "read this"}]})
            assert assert_openai_error(chat, 507)["message"] == error["message"]

        with pytest.raises(grpc.RpcError) as refused:
            list(control(daemon).LoadModel(pb.LoadModelRequest(model=BIG), timeout=60))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == error["message"]

        result = daemon.ocrctl("load", BIG)
        assert result.returncode == 1
        assert result.stderr.startswith(f"ocrctl: {message}"), result.stderr
        failed = daemon.ps()[BIG]  # no runner was started for it
        assert (failed["state"], failed["error"], failed.get("pid", 0)) == (
            "MODEL_STATE_FAILED", error["message"], 0)
        assert daemon.runner_pids() == []
