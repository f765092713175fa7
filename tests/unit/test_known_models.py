"""ocrd.core.known_models: every model ocrd knows (``ocrctl models --all``), served here or not,
with its size, engines and download state. A real directory over real cache layouts in tmp_path;
only Docker's status is given (no Docker here), which decides whether vLLM can run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.known_models import Download, KnownModel, known_models
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.cache_layout import cache_model

GOT = "stepfun-ai/GOT-OCR-2.0-hf"  # transformers only, 1.12 GB in the catalog
MINERU = "opendatalab/MinerU2.5-2509-1.2B"  # vllm first, then transformers
DOTS = "rednote-hilab/dots.ocr"
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
             "vision_config": {"depth": 2}}
NO_DOCKER = DockerStatus(False, reason="Docker is not reachable: no socket")


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


def listing(hub: Path, catalog: Catalog | None = None, **settings) -> dict[str, KnownModel]:
    models = ModelDirectory(catalog or Catalog.load_default(), Settings(cache={"hub_dir": hub}, **settings),
                            docker_status=lambda: NO_DOCKER)
    return {model.entry.id: model for model in known_models(models)}


def test_an_empty_cache_lists_the_whole_catalog_with_the_builtin_models_first(hub):
    models = listing(hub)
    catalog = {entry.id for entry in Catalog.load_default().entries()}
    assert set(models) == catalog and len(catalog) > 20
    first, second, *rest = models.values()
    assert [first.entry.id, second.entry.id] == ["builtin/ppocr", "builtin/tesseract"]
    assert first.download is Download.NOT_NEEDED and first.unavailable == "" and first.size_bytes is None
    # The rest need a download, by id (case aside), each saying how to fetch it.
    assert [m.entry.id for m in rest] == sorted((m.entry.id for m in rest), key=str.casefold)
    assert all(m.download is Download.NOT_DOWNLOADED for m in rest)
    assert f"ocrctl pull {GOT}" in models[GOT].unavailable


def test_the_size_is_the_catalogs_download_size_of_the_weights(hub):
    models = listing(hub)
    assert models[GOT].size_bytes == Catalog.load_default().resolve(GOT).bf16_bytes == 1_120_000_000


def test_engines_keep_the_catalogs_order_and_say_which_this_host_cannot_run(hub):
    mineru = listing(hub)[MINERU]
    assert [e.name for e in mineru.engines] == ["vllm", "transformers"]
    vllm = mineru.engines[0]
    assert not vllm.available and "Docker is not reachable: no socket" in vllm.reason


def test_a_downloaded_model_is_servable_and_listed_before_the_others(hub):
    cache_model(hub, GOT, {"model_type": "got_ocr2"})
    models = listing(hub)
    got = models[GOT]
    assert (got.download, got.unavailable, got.engine) == (Download.DOWNLOADED, "", "transformers")
    assert list(models).index(GOT) < list(models).index(DOTS)


def test_missing_shards_or_only_blobs_are_a_partial_download(hub):
    cache_model(hub, MINERU, QWEN_LIKE, shards=["a.safetensors", "b.safetensors"], present=["a.safetensors"])
    blobs = hub / f"models--{GOT.replace('/', '--')}" / "blobs"  # an interrupted `hf download`
    blobs.mkdir(parents=True)
    (blobs / "0123abcd.incomplete").write_bytes(b"half")
    models = listing(hub)
    assert models[MINERU].download is models[GOT].download is Download.PARTIAL
    # A snapshot with files missing is served (its runner may fetch the rest, online); blobs
    # without a snapshot are not, but they sort before the models with nothing here.
    assert models[MINERU].unavailable == "" and f"ocrctl pull {GOT}" in models[GOT].unavailable
    order = list(models)
    assert order.index("builtin/ppocr") < order.index(MINERU) < order.index(GOT) < order.index(DOTS)


def test_an_upstream_takes_its_catalog_model_over_and_needs_no_download(hub):
    upstream = {"model": "dots.ocr", "url": "http://gpu-box:8000/v1"}
    models = listing(hub, upstreams=[upstream, {"model": "acme/own", "url": "http://gpu-box:8000/v1"}])
    dots, own = models[DOTS], models["acme/own"]
    assert [e.name for e in dots.engines] == ["upstream"] and dots.engine == "upstream"
    assert (dots.download, dots.size_bytes, dots.unavailable) == (Download.NOT_NEEDED, None, "")
    assert own.download is Download.NOT_NEEDED and "gpu-box" in own.entry.description


def test_a_configured_model_unknown_to_the_catalog_is_listed_with_how_to_fetch_it(hub):
    models = listing(hub, models={"acme/custom-vlm": {"keep_alive": "1m"}, "ppocr": {"keep_alive": "1m"}})
    custom = models["acme/custom-vlm"]
    assert (custom.download, custom.engines, custom.engine) == (Download.NOT_DOWNLOADED, (), "")
    assert custom.unavailable == "not downloaded: fetch it with `ocrctl pull acme/custom-vlm`"
    assert "ppocr" not in models  # an alias of a catalog model, listed under its id


def test_a_cached_model_the_catalog_does_not_know_is_listed_as_served(hub):
    cache_model(hub, "acme/tiny-qwen", QWEN_LIKE)
    tiny = listing(hub)["acme/tiny-qwen"]
    assert (tiny.download, tiny.unavailable, [e.name for e in tiny.engines]) == (
        Download.DOWNLOADED, "", ["transformers"])


def test_a_builtin_model_whose_program_is_missing_says_so(hub):
    models = listing(hub, Catalog.load_default({"tesseract": "/nonexistent/tesseract"}))
    tesseract = models["builtin/tesseract"]
    assert tesseract.download is Download.NOT_NEEDED
    assert "needs the 'tesseract' program" in tesseract.unavailable
    # Held back, but nothing to download: after the servable models, before the downloads.
    assert list(models).index("builtin/tesseract") < list(models).index(DOTS)
