"""``ocrctl models`` as printed: the licence column, the notes of licences that restrict use, and the
pointer to ``--all``."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from ocrctl.commands.models import run_models
from ocrd.control.v1 import control_pb2 as pb

LISTING = pb.ListModelsResponse(models=[
    pb.ModelInfo(id="builtin/ppocr", aliases=["ppocr"], engine="builtin", state=pb.MODEL_STATE_NOT_LOADED,
                 description="PP-OCR", license="apache-2.0"),
    pb.ModelInfo(id="datalab-to/chandra-ocr-2", aliases=["chandra-2"], engine="vllm",
                 state=pb.MODEL_STATE_NOT_LOADED, description="Chandra OCR 2", license="OpenRAIL-M (modified)",
                 license_note="commercial use restricted"),
    pb.ModelInfo(id="org/cached", engine="transformers", state=pb.MODEL_STATE_NOT_LOADED),
])


class FakeClient:
    def call(self, method, request, response_type):
        assert method == "ListModels"
        assert not request.all and not request.loaded_only  # what this host can serve now
        return LISTING


def run(capsys: pytest.CaptureFixture[str], *, as_json: bool) -> str:
    assert run_models(FakeClient(), argparse.Namespace(json=as_json, all=False)) == 0  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_models_table_has_a_licence_column_and_marks_a_restrictive_one(capsys):
    lines = run(capsys, as_json=False).splitlines()

    assert lines[0].split() == ["MODEL", "ALIASES", "ENGINE", "STATE", "LICENSE", "DESCRIPTION"]
    assert re.match(r"builtin/ppocr\s+ppocr\s+builtin\s+not loaded\s+apache-2.0\s+PP-OCR$", lines[1])
    assert re.match(r"datalab-to/chandra-ocr-2\s.*\sOpenRAIL-M \(modified\) \*\s+Chandra OCR 2$", lines[2])
    assert re.match(r"org/cached\s+-\s+transformers\s+not loaded\s+-", lines[3])
    # The restriction itself, in full, under the table; then where the rest of the catalog is.
    assert lines[4:] == ["* datalab-to/chandra-ocr-2: commercial use restricted",
                         "('ocrctl models --all' lists every model ocrd knows, downloaded or not)"]


def test_models_json_has_the_licence_and_its_note(capsys):
    models = {m["id"]: m for m in json.loads(run(capsys, as_json=True))["models"]}

    assert models["builtin/ppocr"]["license"] == "apache-2.0"
    assert models["datalab-to/chandra-ocr-2"]["license_note"] == "commercial use restricted"
