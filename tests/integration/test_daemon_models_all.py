"""``ocrctl models --all`` through a real ``ocrd serve``: every catalog model, configured upstream
and ``[models."ORG/NAME"]`` table, downloaded or not, read from the daemon's own Hugging Face
cache (a temporary one, laid out as huggingface_hub lays it out, with no real weights: nothing
here is loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cache_layout import cache_model
from tests.support.daemon import running_daemon

GOT = "stepfun-ai/GOT-OCR-2.0-hf"  # in the cache, complete
MINERU = "opendatalab/MinerU2.5-2509-1.2B"  # in the cache, one shard of two
DOTS = "rednote-hilab/dots.ocr"  # not in the cache
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hub = tmp_path_factory.mktemp("hf") / "hub"
    cache_model(hub, GOT, {"model_type": "got_ocr2"})
    cache_model(hub, MINERU, QWEN_LIKE, shards=["a.safetensors", "b.safetensors"], present=["a.safetensors"])
    return hub


@pytest.fixture(scope="module")
def daemon(hub):
    config = {
        "cache": {"hub_dir": hub},
        "upstreams": [{"model": "acme/remote-ocr", "url": "http://127.0.0.1:9/v1"}],
        "models": {"acme/custom-vlm": {"keep_alive": "1m"}},
    }
    with running_daemon(config) as running:
        yield running


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by model: MODEL, SIZE, ENGINES, DOWNLOADED (the columns before LICENSE)."""
    lines = stdout.splitlines()
    assert lines[0].split()[:6] == ["MODEL", "SIZE", "ENGINES", "DOWNLOADED", "LICENSE", "DESCRIPTION"]
    found = {}
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line)
        if len(cells) >= 5 and "/" in cells[0]:
            found[cells[0]] = cells[:4]
    return found


def test_all_lists_downloaded_partial_and_missing_models_from_the_daemons_cache(daemon, hub):
    result = daemon.ocrctl("models", "--all")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert (table[GOT][1], table[GOT][3]) == ("1.0 GiB", "yes")
    assert table[MINERU][3] == "partial"
    assert table[DOTS][3] == "no" and table[DOTS][1] == "5.7 GiB"
    assert table["builtin/ppocr"][1:] == ["-", "builtin", "-"]
    assert table["acme/remote-ocr"][1:] == ["-", "upstream", "-"]
    assert table["acme/custom-vlm"][1:] == ["-", "-", "no"]
    # The whole catalog, the servable ones first, and where `ocrctl pull` puts the rest.
    order = list(table)
    assert order.index("builtin/ppocr") < order.index(DOTS) and order.index(GOT) < order.index(DOTS)
    assert len(table) >= 24
    assert result.stdout.splitlines()[-1] == (
        f"'ocrctl pull MODEL' downloads one (or the rest of a partial one) into ocrd's cache at {hub}")


def test_all_json_is_the_same_listing(daemon, hub):
    result = daemon.ocrctl("models", "--all", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["cache_dir"] == str(hub)
    models = {m["id"]: m for m in listing["models"]}
    assert list(models) == list(rows(daemon.ocrctl("models", "--all").stdout))
    assert models[GOT]["download"] == "DOWNLOAD_STATE_DOWNLOADED" and models[GOT]["size_bytes"] == "1120000000"
    assert models[DOTS]["download"] == "DOWNLOAD_STATE_NOT_DOWNLOADED"
    assert f"ocrctl pull {DOTS}" in models[DOTS]["unavailable_reason"]
    assert [e["name"] for e in models[DOTS]["engines"]] == ["vllm", "transformers"]
    assert models["builtin/ppocr"]["download"] == "DOWNLOAD_STATE_NOT_NEEDED"


def test_models_without_all_lists_only_what_this_host_can_serve(daemon):
    result = daemon.ocrctl("models", "--json")
    assert result.returncode == 0, result.stderr
    ids = {m["id"] for m in json.loads(result.stdout)["models"]}
    assert {"builtin/ppocr", "acme/remote-ocr"} <= ids
    assert DOTS not in ids and "acme/custom-vlm" not in ids
    assert daemon.ocrctl("models").stdout.splitlines()[-1] == (
        "('ocrctl models --all' lists every model ocrd knows, downloaded or not)")
