"""The transformers runner's options and its reading of the Hugging Face cache (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocrd.worker.engines import EngineOptionsError
from ocrd.worker.transformers_options import default_cache_dir, find_snapshot, parse_options

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_defaults_fill_everything_but_the_repo(monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", "/cache/hub")
    options = parse_options({"repo_id": "org/name"})
    assert (options.revision, options.cache_dir, options.offline) == ("main", "/cache/hub", True)
    assert (options.loader, options.quantization, options.dtype) == ("AutoModelForImageTextToText", "none", "auto")
    assert (options.device, options.attn_implementation, options.trust_remote_code) == ("auto", "auto", False)
    assert options.max_new_tokens == 1024 and options.generation_extras == {}
    assert options.stop == () and options.skip_special_tokens is True


def test_generation_splits_request_defaults_from_extras():
    options = parse_options({"repo_id": "org/name", "generation": {
        "max_new_tokens": 8, "temperature": 0.1, "top_p": 0.9, "min_new_tokens": 8, "repetition_penalty": 1.05}})
    assert options.max_new_tokens == 8
    assert options.generation_extras == {"min_new_tokens": 8, "repetition_penalty": 1.05}


@pytest.mark.parametrize("bad, names", [
    ({}, "repo_id"),
    ({"repo_id": "a/b/c"}, "repo_id"),
    ({"repo_id": "org/name", "quantization": "3bit"}, "quantization"),
    ({"repo_id": "org/name", "loader": "AutoModelForVision2Seq"}, "loader"),
    ({"repo_id": "org/name", "dtype": "int8"}, "dtype"),
    ({"repo_id": "org/name", "device": "gpu"}, "device"),
    ({"repo_id": "org/name", "attn_implementation": "flash"}, "attn_implementation"),
    ({"repo_id": "org/name", "offline": "yes"}, "offline"),
    ({"repo_id": "org/name", "stop": ["ok", ""]}, "stop"),
    ({"repo_id": "org/name", "generation": {"max_new_tokens": 0}}, "max_new_tokens"),
    ({"repo_id": "org/name", "generation": {"temperature": -1}}, "temperature"),
    ({"repo_id": "org/name", "generation": {"top_p": 1.5}}, "top_p"),
    ({"repo_id": "org/name", "processor_kwargs": []}, "processor_kwargs"),
])
def test_bad_options_are_usage_errors_naming_the_key(bad: dict, names: str):
    with pytest.raises(EngineOptionsError, match=names):
        parse_options(bad)


def test_default_cache_dir_follows_huggingface_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", "/data/hf")
    assert default_cache_dir() == "/data/hf/hub"
    monkeypatch.setenv("HF_HUB_CACHE", "/elsewhere")
    assert default_cache_dir() == "/elsewhere"


def _snapshot(hub: Path, files: dict[str, str], *, ref: str | None = "main") -> Path:
    """A cache entry for org/name at COMMIT with ``files`` stored as blobs behind symlinks."""
    repo = hub / "models--org--name"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, content in files.items():
        blob = repo / "blobs" / f"blob-{name}"
        blob.write_text(content)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / ref).write_text(COMMIT)
    return snapshot


def test_complete_snapshot_found_by_branch_and_by_commit(tmp_path: Path):
    snapshot = _snapshot(tmp_path, {"config.json": "{}", "model.safetensors": "x"})
    for revision in ("main", COMMIT):
        found = find_snapshot(str(tmp_path), "org/name", revision)
        assert found.path == snapshot and found.commit == COMMIT and found.complete


def test_missing_repo_or_revision_has_no_snapshot(tmp_path: Path):
    _snapshot(tmp_path, {"config.json": "{}", "model.safetensors": "x"})
    assert find_snapshot(str(tmp_path), "org/other", "main").path is None
    assert find_snapshot(str(tmp_path), "org/name", "dev").path is None
    assert not find_snapshot(str(tmp_path), "org/name", "f" * 40).complete


def test_shards_missing_from_the_index_make_it_incomplete(tmp_path: Path):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {"config.json": "{}", "model.safetensors.index.json": json.dumps(index),
             "model-00001-of-00002.safetensors": "x"}
    found = find_snapshot(str(tmp_path), "org/name", "main")
    assert found.path is None
    _snapshot(tmp_path, files)
    found = find_snapshot(str(tmp_path), "org/name", "main")
    assert found.missing == ("model-00002-of-00002.safetensors",) and not found.complete


def test_a_dangling_blob_link_counts_as_missing(tmp_path: Path):
    snapshot = _snapshot(tmp_path, {"config.json": "{}", "model.safetensors": "x"})
    (snapshot / "model.safetensors").resolve().unlink()  # an interrupted download or a bad cleanup
    assert find_snapshot(str(tmp_path), "org/name", "main").missing == ("model.safetensors",)


# --- catalog facts the daemon sends: api, transformers version, processor options -------------


def test_catalog_facts_are_parsed_not_ignored():
    options = parse_options({
        "repo_id": "org/m", "api": "got_ocr2", "transformers_version": "<5",
        "processor_options": {"num_crops": 16},
    })
    assert options.api == "got_ocr2"
    assert options.transformers_version == "<5"
    assert options.processor_options == {"num_crops": 16}


def test_an_unknown_api_is_a_usage_error():
    with pytest.raises(EngineOptionsError, match="'api'"):
        parse_options({"repo_id": "org/m", "api": "telepathy"})


def test_models_with_their_own_python_api_are_refused_before_loading():
    from ocrd.errors import ModelLoadFailed
    from ocrd.worker.transformers_worker import check_runner_support

    with pytest.raises(ModelLoadFailed, match="own Python API"):
        check_runner_support(parse_options({"repo_id": "vikhyatk/moondream2", "api": "moondream"}))


def test_a_transformers_version_the_runner_lacks_is_refused_with_what_to_do():
    import transformers

    from ocrd.errors import ModelLoadFailed
    from ocrd.worker.transformers_worker import check_runner_support

    check_runner_support(parse_options({"repo_id": "org/m", "transformers_version": ">=4.49"}))
    with pytest.raises(ModelLoadFailed) as caught:
        check_runner_support(parse_options({"repo_id": "rednote-hilab/dots.ocr",
                                            "transformers_version": "<5"}))
    assert transformers.__version__ in caught.value.message
    assert "transformers.python" in caught.value.message


def test_a_requests_preset_fields_reach_the_generation_parameters():
    from ocrd.worker.chat_input import generation_params, parse_request

    body = {"messages": [{"role": "user", "content": "hi"}],
            "ocrd": {"preset": "format", "processor_kwargs": {"format": True},
                     "skip_special_tokens": False}}
    params = generation_params(parse_request(json.dumps(body).encode()))
    assert params.processor_kwargs == {"format": True}
    assert params.skip_special_tokens is False
    plain = parse_request(b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert generation_params(plain).processor_kwargs == {}
