"""The transformers runner process, for real: `python -m ocrd.worker --engine transformers`.

Tiny random-weight VLMs (``tiny_hub``, a real Hugging Face cache) are served by the real runner
subprocess; tests talk to it over its Unix socket with httpx, as the daemon does, with
``HF_HUB_OFFLINE=1``. Random weights write nonsense, so the tests check token counts, finish
reasons, streaming against non-streaming, and what was loaded — never the text itself. Every
runner gets ``min_new_tokens`` far above any limit used here, so a random EOS never ends a
completion early: each one ends at its token limit, or at a stop string.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.openapi import validate
from tests.support.render import data_url
from tests.support.worker import Worker, complete, running, stream_events, temp_workdir, worker_env

START_TIMEOUT = 300.0  # hang guards only; nothing asserts on speed
EXIT_TIMEOUT = 60.0
DEFAULT_TOKENS = 16  # the runners' generation.max_new_tokens
NEVER_EOS = 100_000  # min_new_tokens: random weights must not end a completion by chance
KINDS = ("qwen2_vl", "llava", "idefics3", "got_ocr2")


def start_worker(workdir: Path, name: str, options: dict, env: dict[str, str], model_id: str = "tiny/test") -> Worker:
    return Worker(workdir, name, engine="transformers", options=options, env=env, model_id=model_id,
                  start_timeout=START_TIMEOUT, exit_timeout=EXIT_TIMEOUT, client_timeout=300)


def runner_env(hub, extra_pythonpath: str | None = None) -> dict[str, str]:
    extra = {"PYTHONPATH": extra_pythonpath} if extra_pythonpath else {}
    return worker_env(HF_HUB_OFFLINE="1", HF_HOME=str(hub.hf_home), HF_HUB_CACHE=str(hub.hub_dir), **extra)


def options_for(model, hub_dir: Path, **overrides) -> dict:
    options = {
        "repo_id": model.repo_id, "revision": model.revision, "cache_dir": str(hub_dir), "offline": True,
        "loader": "AutoModelForImageTextToText", "trust_remote_code": False, "quantization": "none",
        "dtype": "auto", "device": "cpu", "attn_implementation": "auto", "processor_kwargs": {},
        "generation": {"max_new_tokens": DEFAULT_TOKENS, "min_new_tokens": NEVER_EOS}, "stop": [],
        "skip_special_tokens": True,
    }
    return {**options, **overrides}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    yield from temp_workdir("ocrdt-")


def _running(workdir: Path, name: str, options: dict, env: dict[str, str]) -> Iterator[Worker]:
    yield from running(start_worker(workdir, name, options, env))


@pytest.fixture(scope="module", params=KINDS)
def runner(request, tiny_hub, workdir: Path) -> Iterator[Worker]:
    """One float32 runner per architecture, shared by the tests of that architecture."""
    model = tiny_hub.models[request.param]
    yield from _running(workdir, request.param, options_for(model, tiny_hub.hub_dir), runner_env(tiny_hub))


@pytest.fixture(scope="module", params=["8bit", "4bit"])
def quantized(request, tiny_hub, workdir: Path) -> Iterator[tuple[str, Worker]]:
    model = tiny_hub.models["llava"]
    options = options_for(model, tiny_hub.hub_dir, quantization=request.param)
    for worker in _running(workdir, f"llava-{request.param}", options, runner_env(tiny_hub)):
        yield request.param, worker


# --- requests ------------------------------------------------------------------------------------


def png(size: tuple[int, int], color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = (png((96, 64), "white"), png((48, 112), "gray"))


def chat_body(images: int = 1, text: str = "Read the text in this image.", **extra) -> dict:
    content = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": data_url(data)}} for data in IMAGES[:images]]
    messages = [{"role": "system", "content": "You transcribe documents."}, {"role": "user", "content": content}]
    return {"model": "tiny/test", "messages": messages, "temperature": 0, **extra}


def content_of(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


def streamed_text(events: list) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])


# --- loading ----------------------------------------------------------------------------------------


def test_load_reports_progress_then_ready(runner: Worker):
    *progress, ready = runner.events
    stages = [e["stage"] for e in progress]
    assert stages[0] == "starting" and stages[-1] == "warm-up"
    for stage in ("loading processor", "loading weights"):
        assert stage in stages
    assert progress[-2]["message"].startswith("shards loaded 1/1")
    assert all(e["event"] == "progress" and 0 <= e["progress"] <= 1 for e in progress)
    assert [e["progress"] for e in progress] == sorted(e["progress"] for e in progress)
    assert ready == {"event": "ready", "pid": runner.proc.pid, "memory_bytes": ready["memory_bytes"]}
    assert ready["memory_bytes"] > 50_000_000  # the RSS of a process holding torch


def test_info_names_what_was_loaded(runner: Worker, tiny_hub):
    info = runner.info()
    model = next(m for m in tiny_hub.models.values() if m.repo_id == info["repo_id"])
    assert info["revision"] == model.revision and info["architecture"] == model.architecture
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["quantization"] == "none"
    assert set(info["parameter_dtypes"]) == {"float32"}
    # Qwen2-VL's processor needs torchvision for video only: the runner serves it image-only.
    assert info["image_only_processor"] == (model.kind == "qwen2_vl")


# --- chat ------------------------------------------------------------------------------------------


def test_one_image_and_two_images(runner: Worker, tiny_hub):
    one = complete(runner, chat_body(images=1))
    two = complete(runner, chat_body(images=2))
    for result in (one, two):
        validate("CreateChatCompletionResponse", result)
        assert result["choices"][0]["finish_reason"] == "length"
        assert result["usage"]["completion_tokens"] == DEFAULT_TOKENS
        usage = result["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    model = next(m for m in tiny_hub.models.values() if m.repo_id == runner.info()["repo_id"])
    # The second image's placeholder tokens are part of the prompt.
    added = two["usage"]["prompt_tokens"] - one["usage"]["prompt_tokens"]
    assert added >= (model.image_token_count or 1)


def test_stream_equals_non_stream_at_temperature_0(runner: Worker):
    plain = complete(runner, chat_body(images=2))
    events = stream_events(runner, chat_body(images=2, stream=True, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        validate("CreateChatCompletionStreamResponse", chunk)
    role, *_, finish, usage_chunk, _done = events
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed_text(events) == content_of(plain)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["usage"] == plain["usage"]


def test_max_tokens_gives_exactly_that_many_tokens(runner: Worker):
    result = complete(runner, chat_body(max_tokens=5))
    assert result["usage"]["completion_tokens"] == 5
    assert result["choices"][0]["finish_reason"] == "length"
    events = stream_events(runner, chat_body(max_completion_tokens=5, stream=True,
                                             stream_options={"include_usage": True}))
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 5
    assert streamed_text(events) == content_of(result)


def test_sampling_with_a_seed_repeats(runner: Worker):
    body = chat_body(temperature=1.0, top_p=0.9, seed=1234, max_tokens=8)
    first, second = complete(runner, body), complete(runner, body)
    assert content_of(first) == content_of(second)
    assert first["usage"]["completion_tokens"] == 8


def pick_stop(text: str) -> str:
    """A stop string from the model's own output (random weights: any text will do), first
    occurring where it is taken from, free of the replacement character of cut UTF-8."""
    for size in (2, 1):
        for start in range(len(text) - size + 1):
            candidate = text[start:start + size]
            if "\ufffd" not in candidate and text.find(candidate) == start:
                return candidate
    raise AssertionError(f"no stop-string candidate in {text!r}")


def test_stop_string_cuts_the_output_before_it(runner: Worker):
    full = complete(runner, chat_body())
    text = content_of(full)
    stop = pick_stop(text)
    for stream in (False, True):
        body = chat_body(stop=[stop], stream=stream, stream_options={"include_usage": True} if stream else None)
        if stream:
            events = stream_events(runner, body)
            cut, reason, usage = streamed_text(events), events[-3]["choices"][0]["finish_reason"], events[-2]["usage"]
        else:
            result = complete(runner, body)
            cut, reason, usage = content_of(result), result["choices"][0]["finish_reason"], result["usage"]
        assert cut == text[: text.index(stop)]  # the stop string itself is not part of the output
        assert reason == "stop"
        assert 1 <= usage["completion_tokens"] <= DEFAULT_TOKENS


def test_cancelled_stream_stops_generating_and_the_next_request_is_served(runner: Worker):
    long_body = chat_body(max_tokens=1500, stream=True)
    with runner.client() as client, client.stream("POST", "/v1/chat/completions", json=long_body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # text is coming: leaving the block now closes the connection mid-stream
    result = complete(runner, chat_body(max_tokens=3))
    assert result["usage"]["completion_tokens"] == 3
    recent = runner.info()["recent_generations"]
    cancelled = [g for g in recent if g["cancelled"]]
    assert cancelled, recent
    assert cancelled[-1]["completion_tokens"] < 1500  # it stopped instead of running to its limit
    assert recent[-1] == {"completion_tokens": 3, "cancelled": False}


# --- quantization ------------------------------------------------------------------------------


def float32_weight_bytes(snapshot: Path) -> int:
    """The tensor bytes of the float32 checkpoint, from its safetensors header."""
    with open(snapshot / "model.safetensors", "rb") as weights:
        header = json.loads(weights.read(int.from_bytes(weights.read(8), "little")))
    return sum(t["data_offsets"][1] - t["data_offsets"][0] for k, t in header.items() if k != "__metadata__")


def test_quantized_loads_use_bitsandbytes_layers_and_less_memory(quantized, tiny_hub):
    quantization, worker = quantized
    info = worker.info()
    layer, stored = {"8bit": ("Linear8bitLt", "int8"), "4bit": ("Linear4bit", "uint8")}[quantization]
    assert info["quantization"] == quantization
    assert info["linear_layers"].get(layer, 0) > 0 and info["parameter_dtypes"].get(stored, 0) > 0
    # The vision tower and projector stay in float32: only the language model is quantized.
    assert info["unquantized_modules"] == ["lm_head", "model.multi_modal_projector", "model.vision_tower"]
    assert info["weights_bytes"] < float32_weight_bytes(tiny_hub.models["llava"].snapshot)
    result = complete(worker, chat_body(max_tokens=5))
    assert result["usage"]["completion_tokens"] == 5 and result["choices"][0]["finish_reason"] == "length"
    events = stream_events(worker, chat_body(max_tokens=5, stream=True))
    assert streamed_text(events) == content_of(result)


def test_4bit_is_smaller_than_8bit(tiny_hub, workdir: Path):
    sizes = {}
    for quantization in ("8bit", "4bit"):
        options = options_for(tiny_hub.models["llava"], tiny_hub.hub_dir, quantization=quantization)
        for worker in _running(workdir, f"size-{quantization}", options, runner_env(tiny_hub)):
            sizes[quantization] = worker.info()["weights_bytes"]
    assert sizes["4bit"] < sizes["8bit"]


# --- failures ------------------------------------------------------------------------------------


def failed(worker: Worker) -> dict:
    """The error event of a runner that must fail: exit 1, nothing after it, no socket left."""
    final = worker.until_final()
    assert final["event"] == "error", f"{final}\n{worker.stderr()}"
    assert worker.proc.wait(timeout=EXIT_TIMEOUT) == 1
    assert worker.next_line(timeout=EXIT_TIMEOUT) is None  # nothing after the error event
    assert not worker.socket.exists()
    assert "\n" not in final["message"] and "Traceback" not in final["message"]
    return final


def test_corrupt_weights_are_an_error_event(tmp_path: Path, tiny_hub, workdir: Path):
    from tests.support.tiny_models import build_tiny_model, corrupt_weights

    model = build_tiny_model("llava", tmp_path / "hub", repo_id="ocrd-test/tiny-llava-damaged")
    corrupt_weights(model)
    options = options_for(model, tmp_path / "hub")
    final = failed(start_worker(workdir, "corrupt", options, runner_env(tiny_hub), model_id="ocrd-test/damaged"))
    assert "weights" in final["message"] and "ocrctl pull ocrd-test/damaged" in final["message"]


def test_model_missing_from_the_cache_names_ocrctl_pull(tiny_hub, workdir: Path):
    model = tiny_hub.models["llava"]
    options = options_for(model, tiny_hub.hub_dir, repo_id="ocrd-test/not-downloaded", revision="main")
    final = failed(start_worker(workdir, "missing", options, runner_env(tiny_hub), model_id="acme/not-downloaded"))
    assert "ocrd-test/not-downloaded" in final["message"]
    assert "ocrctl pull acme/not-downloaded" in final["message"]


def test_missing_bitsandbytes_is_one_line_before_any_weights(tmp_path: Path, tiny_hub, workdir: Path):
    shim = tmp_path / "shim" / "bitsandbytes"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named bitsandbytes (test shim)")\n')
    options = options_for(tiny_hub.models["llava"], tiny_hub.hub_dir, quantization="8bit")
    worker = start_worker(workdir, "nobnb", options, runner_env(tiny_hub, extra_pythonpath=str(tmp_path / "shim")))
    final = failed(worker)
    assert "bitsandbytes" in final["message"] and "8bit" in final["message"]
    assert "loading weights" not in [e.get("stage") for e in worker.events]


def test_architecture_transformers_cannot_serve_is_named(tmp_path: Path, tiny_hub, workdir: Path):
    from transformers import GPT2Config

    from tests.support.tiny_models import publish_snapshot

    files = tmp_path / "gpt2"
    GPT2Config(n_embd=64, n_layer=1, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(files)
    (files / "model.safetensors").write_bytes(b"never read: the check comes before the weights")
    revision, _ = publish_snapshot(files, tmp_path / "hub", "ocrd-test/text-only")
    options = {"repo_id": "ocrd-test/text-only", "revision": revision, "cache_dir": str(tmp_path / "hub"),
               "device": "cpu"}
    final = failed(start_worker(workdir, "gpt2", options, runner_env(tiny_hub)))
    assert "config.json names architecture GPT2LMHeadModel" in final["message"]
    assert "cannot load as image-text-to-text" in final["message"]
