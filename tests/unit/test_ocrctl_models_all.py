"""``ocrctl models --all`` as printed: every model ocrd knows, with its size, its engines (those
this host cannot run in parentheses, and why below), whether it is downloaded, and the hints."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from ocrctl.commands.models import run_models
from ocrd.control.v1 import control_pb2 as pb

NO_DOCKER = "Docker is not reachable; vLLM runs in Docker"
BUILTIN = [pb.ModelEngine(name="builtin", available=True)]
BOTH = [pb.ModelEngine(name="vllm", available=False, reason=NO_DOCKER),
        pb.ModelEngine(name="transformers", available=True)]
LISTING = pb.ListModelsResponse(cache_dir="/var/lib/ocrd/huggingface/hub", models=[
    pb.ModelInfo(id="builtin/ppocr", engine="builtin", state=pb.MODEL_STATE_READY, description="PP-OCR",
                 license="apache-2.0", engines=BUILTIN, download=pb.DOWNLOAD_STATE_NOT_NEEDED),
    pb.ModelInfo(id="stepfun-ai/GOT-OCR-2.0-hf", engine="transformers", description="GOT-OCR 2.0",
                 license="apache-2.0", size_bytes=1_120_000_000, download=pb.DOWNLOAD_STATE_DOWNLOADED,
                 engines=[pb.ModelEngine(name="transformers", available=True)]),
    pb.ModelInfo(id="builtin/tesseract", engine="builtin", description="Tesseract 5", license="apache-2.0",
                 engines=BUILTIN, download=pb.DOWNLOAD_STATE_NOT_NEEDED,
                 unavailable_reason="model 'builtin/tesseract' needs the 'tesseract' program"),
    pb.ModelInfo(id="opendatalab/MinerU2.5-2509-1.2B", engine="transformers", description="MinerU2.5",
                 license="agpl-3.0", size_bytes=2_150_000_000, engines=BOTH, download=pb.DOWNLOAD_STATE_PARTIAL,
                 unavailable_reason="not downloaded"),
    pb.ModelInfo(id="datalab-to/chandra-ocr-2", engine="transformers", description="Chandra OCR 2",
                 license="OpenRAIL-M (modified)", license_note="commercial use restricted",
                 size_bytes=8_060_000_000, engines=BOTH, download=pb.DOWNLOAD_STATE_NOT_DOWNLOADED,
                 unavailable_reason="not downloaded"),
    pb.ModelInfo(id="acme/custom", description='configured in [models."acme/custom"]',
                 download=pb.DOWNLOAD_STATE_NOT_DOWNLOADED, unavailable_reason="not downloaded"),
])


class FakeClient:
    """The control plane's answer, and the request ocrctl sent for it."""

    def __init__(self, listing: pb.ListModelsResponse):
        self.listing = listing
        self.requests: list[pb.ListModelsRequest] = []

    def call(self, method, request, response_type):
        assert method == "ListModels" and response_type is pb.ListModelsResponse
        self.requests.append(request)
        return self.listing


def run(capsys: pytest.CaptureFixture[str], *, as_json: bool = False,
        listing: pb.ListModelsResponse = LISTING) -> tuple[str, FakeClient]:
    client = FakeClient(listing)
    assert run_models(client, argparse.Namespace(json=as_json, all=True)) == 0  # type: ignore[arg-type]
    return capsys.readouterr().out, client


def test_all_asks_the_daemon_for_every_model(capsys):
    _, client = run(capsys)
    assert [(r.all, r.loaded_only) for r in client.requests] == [(True, False)]


def test_all_prints_size_engines_download_state_and_licence_in_the_daemons_order(capsys):
    lines = run(capsys)[0].splitlines()
    assert lines[0].split() == ["MODEL", "SIZE", "ENGINES", "DOWNLOADED", "LICENSE", "DESCRIPTION"]
    assert re.fullmatch(r"builtin/ppocr\s+-\s+builtin\s+-\s+apache-2.0\s+PP-OCR", lines[1])
    assert re.fullmatch(r"stepfun-ai/GOT-OCR-2.0-hf\s+1.0 GiB\s+transformers\s+yes\s+apache-2.0\s+GOT-OCR 2.0",
                        lines[2])
    assert re.fullmatch(r"builtin/tesseract\s+-\s+builtin\s+-\s+apache-2.0\s+Tesseract 5", lines[3])
    # An engine this host cannot run now is in parentheses, in the model's order of preference.
    assert re.fullmatch(r"opendatalab/MinerU2.5-2509-1.2B\s+2.0 GiB\s+\(vllm\), transformers\s+partial\s+"
                        r"agpl-3.0\s+MinerU2.5", lines[4])
    assert re.fullmatch(r"datalab-to/chandra-ocr-2\s+7.5 GiB\s+\(vllm\), transformers\s+no\s+"
                        r"OpenRAIL-M \(modified\) \*\s+Chandra OCR 2", lines[5])
    assert re.fullmatch(r'acme/custom\s+-\s+-\s+no\s+-\s+configured in \[models."acme/custom"\]', lines[6])


def test_all_explains_below_the_table_what_the_table_abbreviates(capsys):
    notes = run(capsys)[0].splitlines()[7:]
    assert notes == [
        "* datalab-to/chandra-ocr-2: commercial use restricted",
        f"(vllm): this host cannot run it now: {NO_DOCKER}",  # once, however many models it concerns
        # Held back by something neither the engines nor the download state show.
        "builtin/tesseract: model 'builtin/tesseract' needs the 'tesseract' program",
        "'ocrctl pull MODEL' downloads one (or the rest of a partial one) into ocrd's cache at "
        "/var/lib/ocrd/huggingface/hub",
    ]


def test_all_has_no_download_hint_when_everything_is_downloaded(capsys):
    downloaded = pb.ListModelsResponse(cache_dir="/hub", models=[LISTING.models[0], LISTING.models[1]])
    out = run(capsys, listing=downloaded)[0]
    assert len(out.splitlines()) == 3 and "ocrctl pull" not in out


def test_all_json_carries_the_same_data(capsys):
    shown = json.loads(run(capsys, as_json=True)[0])
    assert shown["cache_dir"] == "/var/lib/ocrd/huggingface/hub"
    models = {m["id"]: m for m in shown["models"]}
    assert list(models) == [m.id for m in LISTING.models]
    mineru = models["opendatalab/MinerU2.5-2509-1.2B"]
    assert mineru["size_bytes"] == "2150000000" and mineru["download"] == "DOWNLOAD_STATE_PARTIAL"
    assert mineru["engines"] == [{"name": "vllm", "available": False, "reason": NO_DOCKER},
                                 {"name": "transformers", "available": True, "reason": ""}]
    assert models["builtin/tesseract"]["unavailable_reason"].endswith("needs the 'tesseract' program")
    assert models["datalab-to/chandra-ocr-2"]["license_note"] == "commercial use restricted"
