"""The tiny random-weight VLM fixtures: a real HF cache that Transformers loads offline and runs.

Loading and generation happen in one child Python process started the way a runner is: with
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing at the fixture hub, loading by repo id. In that
child every socket connect and DNS lookup is replaced by a function that records and refuses it,
so "no network" is checked, not assumed. One child serves every kind so that transformers is
imported once; the tests below assert on what it reports. Run this file directly (``--probe``)
only through ``_run_probe``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # when run as the probe script, before importing tests.support
    sys.path.insert(0, str(REPO))

from tests.support.tiny_models import (  # noqa: E402 - this file also runs as a script: sys.path first
    DEFAULT_REPO_IDS,
    KINDS,
    TinyHub,
    build_tiny_model,
    corrupt_weights,
    repo_folder,
)

QWEN_KINDS = ("qwen2_vl", "qwen2_5_vl")
QUANTIZED_KIND = "qwen2_vl"
CORRUPT_REPO = "ocrd-test/tiny-corrupt"
# What each family's chat template writes for one image, before the processor expands it.
IMAGE_MARKERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": "<image>\n",
    "idefics3": "User:<image>",
    "got_ocr2": "<img><imgpad></img>",
}


# --------------------------------------------------------------------------- the child process


def _refuse_network() -> list[str]:
    """Makes every connect / DNS lookup fail and returns the list they get recorded in."""
    import socket

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[1:2] or args[:1]))
        raise OSError("network access attempted in an offline test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    return attempts


def _load_processor(repo_id: str, cache_dir: str | None) -> tuple[object, str | None]:
    """``AutoProcessor``, or on the torchvision ImportError the image-only processor.

    Returns the processor and the ImportError's text (None when AutoProcessor worked): this is
    the documented way to load Qwen2-VL / Qwen2.5-VL without torchvision.
    """
    import transformers
    from transformers.utils import cached_file

    from tests.support.tiny_model_recipes import image_only_processor

    try:
        return transformers.AutoProcessor.from_pretrained(repo_id, cache_dir=cache_dir), None
    except ImportError as error:
        config_file = cached_file(repo_id, "processor_config.json", cache_dir=cache_dir)
        config = json.loads(Path(config_file).read_text())
        processor_cls = image_only_processor(getattr(transformers, config["processor_class"]))
        return processor_cls.from_pretrained(repo_id, cache_dir=cache_dir), str(error)


def _test_image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 48), "white")
    ImageDraw.Draw(image).rectangle((8, 12, 88, 36), fill="black")
    return image


def _probe_one(request: dict) -> dict:
    """Loads one repo by id (optionally quantized), renders a chat with one image, generates 8 tokens."""
    import transformers

    repo_id, cache_dir = request["repo_id"], request.get("cache_dir")
    kwargs = {"cache_dir": cache_dir}
    if quantize := request.get("quantize"):  # "load_in_8bit" or "load_in_4bit"
        # device_map at load: a bitsandbytes model cannot be moved afterwards.
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(**{quantize: True})
        kwargs["device_map"] = "cpu"
    try:
        processor, video_error = _load_processor(repo_id, cache_dir)
        model = transformers.AutoModelForImageTextToText.from_pretrained(repo_id, **kwargs)
    # Any load error is reported, not raised: the corrupt-weights test expects one.
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}
    # OpenAI-style content parts: the processor turns image_url parts into image parts.
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "Read the text in this image."},
    ]}]  # fmt: skip
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[_test_image()], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    grid = inputs.get("image_grid_thw")
    return {
        "processor": type(processor).__name__,
        "video_error": video_error,
        "has_video_processor": hasattr(processor, "video_processor"),
        "model": type(model).__name__,
        "linear_types": sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__}),
        "prompt": prompt,
        "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
        "grid_tokens": None if grid is None else int(grid.prod()) // 4,
        "new_tokens": output.shape[1] - inputs["input_ids"].shape[1],
    }


def _guard_catches_a_real_request(attempts: list[str]) -> bool:
    """True when a plain HTTP request is refused and recorded: the guard is not a no-op."""
    import urllib.request

    before = len(attempts)
    try:
        urllib.request.urlopen("http://huggingface.co/api/models", timeout=5)
    except OSError:
        pass
    return len(attempts) > before


def probe_main(requests_file: str, results_file: str) -> None:
    attempts = _refuse_network()
    import torch

    torch.set_num_threads(1)
    requests = json.loads(Path(requests_file).read_text())
    results = {name: _probe_one(request) for name, request in requests.items()}
    results["network_attempts"] = list(attempts)
    results["guard_works"] = _guard_catches_a_real_request(attempts)
    results["offline_env"] = os.environ.get("HF_HUB_OFFLINE")
    Path(results_file).write_text(json.dumps(results))


# --------------------------------------------------------------------------- fixtures


def _run_probe(requests: dict, hub: TinyHub, work: Path) -> dict:
    (work / "requests.json").write_text(json.dumps(requests))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hub.hf_home),
        "HF_HUB_CACHE": str(hub.hub_dir),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    args = [sys.executable, __file__, "--probe", str(work / "requests.json"), str(work / "results.json")]
    done = subprocess.run(args, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((work / "results.json").read_text())


@pytest.fixture(scope="module")
def probe(tiny_hub: TinyHub, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the offline child reports for every kind, 8-bit and 4-bit loads and a corrupt repo."""
    work = tmp_path_factory.mktemp("tiny-probe")
    # The corrupt copy lives in its own hub: the session hub is shared and must stay loadable.
    corrupt_hub = work / "corrupt-hub"
    corrupt_weights(build_tiny_model("llava", corrupt_hub, CORRUPT_REPO))
    requests = {kind: {"repo_id": model.repo_id} for kind, model in tiny_hub.models.items()}
    for quantize in ("load_in_8bit", "load_in_4bit"):
        requests[quantize] = {"repo_id": tiny_hub.models[QUANTIZED_KIND].repo_id, "quantize": quantize}
    requests["corrupt"] = {"repo_id": CORRUPT_REPO, "cache_dir": str(corrupt_hub)}
    return _run_probe(requests, tiny_hub, work)


# --------------------------------------------------------------------------- cache layout


def test_scan_cache_dir_lists_every_kind_with_its_revision_and_size(tiny_hub: TinyHub) -> None:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(tiny_hub.hub_dir)
    assert info.warnings == []
    repos = {repo.repo_id: repo for repo in info.repos}
    assert {DEFAULT_REPO_IDS[kind] for kind in KINDS} <= set(repos)
    for model in tiny_hub.models.values():
        repo = repos[model.repo_id]
        blobs = list((repo_folder(tiny_hub.hub_dir, model.repo_id) / "blobs").iterdir())
        assert [revision.commit_hash for revision in repo.revisions] == [model.revision]
        assert repo.refs == {"main": next(iter(repo.revisions))}
        assert repo.size_on_disk == sum(blob.stat().st_size for blob in blobs)
        assert 200_000 < repo.size_on_disk < 3_000_000  # "tiny": ~1 MB, not a real checkpoint


def test_snapshot_files_are_relative_symlinks_to_content_named_blobs(tiny_hub: TinyHub) -> None:
    for model in tiny_hub.models.values():
        repo_dir = repo_folder(tiny_hub.hub_dir, model.repo_id)
        assert model.snapshot == repo_dir / "snapshots" / model.revision
        assert len(model.revision) == 40 and int(model.revision, 16) >= 0
        assert (repo_dir / "refs" / "main").read_bytes() == model.revision.encode()
        names = {path.name for path in model.snapshot.iterdir()}
        assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
        for link in model.snapshot.iterdir():
            target = os.readlink(link)
            assert target.startswith("../../blobs/"), target
            assert Path(target).name == hashlib.sha256(link.read_bytes()).hexdigest()


def test_architecture_is_what_config_json_names(tiny_hub: TinyHub) -> None:
    for model in tiny_hub.models.values():
        config = json.loads((model.snapshot / "config.json").read_text())
        assert config["architectures"] == [model.architecture]
        generation = json.loads((model.snapshot / "generation_config.json").read_text())
        assert generation["eos_token_id"] is not None and generation["pad_token_id"] is not None


def test_same_seed_same_revision_and_any_repo_id(tiny_hub: TinyHub, tmp_path: Path) -> None:
    # A fixture can stand in for a catalog model under that model's repo id.
    stand_in = build_tiny_model("qwen2_vl", tmp_path, "opendatalab/MinerU2.5-2509-1.2B")
    assert stand_in.revision == tiny_hub.models["qwen2_vl"].revision
    assert stand_in.snapshot.parent.parent.name == "models--opendatalab--MinerU2.5-2509-1.2B"
    reseeded = build_tiny_model("qwen2_vl", tmp_path, "opendatalab/MinerU2.5-2509-1.2B", seed=1)
    assert reseeded.revision != stand_in.revision
    assert (stand_in.snapshot.parents[1] / "refs" / "main").read_text() == reseeded.revision


# --------------------------------------------------------------------------- loading and running


def test_the_probe_ran_offline_without_touching_the_network(probe: dict) -> None:
    assert probe["offline_env"] == "1"
    assert probe["network_attempts"] == []
    assert probe["guard_works"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_loads_by_repo_id_offline_and_generates_eight_tokens(kind: str, probe: dict, tiny_hub: TinyHub):
    result, model = probe[kind], tiny_hub.models[kind]
    assert "error" not in result, result.get("error")
    assert result["model"] == model.architecture
    assert IMAGE_MARKERS[kind] in result["prompt"]
    assert result["new_tokens"] == 8
    if model.image_token_count is None:  # Qwen: dynamic resolution, one token per 16x16 px
        assert result["image_tokens"] == result["grid_tokens"] and 4 <= result["image_tokens"] <= 16
    else:
        assert result["image_tokens"] == model.image_token_count


@pytest.mark.parametrize("kind", QWEN_KINDS)
def test_qwen_autoprocessor_fails_only_on_the_video_processor(kind: str, probe: dict) -> None:
    result = probe[kind]
    assert "Qwen2VLVideoProcessor requires the Torchvision library" in result["video_error"]
    assert result["processor"] == {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}[kind]
    assert result["has_video_processor"] is False


@pytest.mark.parametrize("kind", sorted(set(KINDS) - set(QWEN_KINDS)))
def test_other_kinds_load_with_autoprocessor(kind: str, probe: dict) -> None:
    assert probe[kind]["video_error"] is None


QUANTIZED_LAYERS = [("load_in_8bit", "Linear8bitLt"), ("load_in_4bit", "Linear4bit")]


@pytest.mark.parametrize(("quantize", "layer"), QUANTIZED_LAYERS)
def test_bitsandbytes_on_cpu_quantizes_linear_layers_and_generates(quantize: str, layer: str, probe: dict):
    result = probe[quantize]
    assert "error" not in result, result.get("error")
    assert layer in result["linear_types"]
    assert result["new_tokens"] == 8


def test_corrupt_weights_make_loading_fail(probe: dict) -> None:
    assert "error" in probe["corrupt"], probe["corrupt"]
    # safetensors' own words: the header promises more bytes than the truncated blob has.
    assert "incomplete metadata, file not fully covered" in probe["corrupt"]["error"]


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    probe_main(*sys.argv[2:4])
