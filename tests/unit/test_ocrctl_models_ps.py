"""``ocrctl ps`` and ``ocrctl status`` as printed for the models they show: a model never used
since its load, and a failed model's error, which names the model once."""

from __future__ import annotations

import argparse
import re

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ocrctl.commands.status import run_ps, run_status
from ocrd.control.v1 import control_pb2 as pb

UNREACHABLE = ("remote/ppocr: the upstream server at http://gpu-box:8000/v1 cannot be reached "
               "(Connection refused); is it running, and is the URL right?")
MODELS = [
    pb.ModelInfo(id="builtin/ppocr", engine="builtin", state=pb.MODEL_STATE_READY, device="cpu", pid=4242,
                 keep_alive_seconds=300, loaded_at=Timestamp(seconds=1_700_000_000)),
    pb.ModelInfo(id="remote/ppocr", engine="upstream", state=pb.MODEL_STATE_FAILED, error=UNREACHABLE),
    pb.ModelInfo(id="org/vlm", engine="transformers", state=pb.MODEL_STATE_FAILED, error="runner exited: killed"),
]


class FakeClient:
    target = "unix:///run/ocrd/ocrd.sock"

    def call(self, method, request, response_type):
        if method == "ListModels":
            assert request.loaded_only
            return pb.ListModelsResponse(models=MODELS)
        assert method == "GetStatus"
        return pb.GetStatusResponse(version="1.0", pid=1, models=MODELS)


def output(capsys: pytest.CaptureFixture[str], run) -> list[str]:
    assert run(FakeClient(), argparse.Namespace(json=False)) == 0
    return capsys.readouterr().out.splitlines()


def test_ps_shows_a_model_not_used_since_its_load_as_never(capsys):
    row = output(capsys, run_ps)[1]
    assert re.fullmatch(r"builtin/ppocr\s+builtin\s+ready\s+cpu\s+4242\s+-\s+0/0\s+5m\s+never", row)


@pytest.mark.parametrize("run", [run_ps, run_status])
def test_a_failed_models_error_names_the_model_once(capsys, run):
    lines = output(capsys, run)
    assert lines[-2:] == [
        "remote/ppocr: the upstream server at http://gpu-box:8000/v1 cannot be reached (Connection refused); "
        "is it running, and is the URL right?",
        "org/vlm: runner exited: killed",  # an error that does not name it gets the name in front
    ]
