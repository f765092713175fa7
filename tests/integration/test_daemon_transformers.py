"""The transformers engine end to end: a real ``ocrd serve``, real transformers runners on tiny
random-weight VLMs in a real Hugging Face cache, driven by the official ``openai`` client and the
real ``ocrctl``.

One daemon for the module, with its own hub (``cache.hub_dir``): Qwen2-VL and LLaVA under test
repo ids the catalog does not know (served as uncatalogued cached models), and two catalog models
built from the same recipes (``Qwen/Qwen2-VL-2B-Instruct``: alias and default preset;
``stepfun-ai/GOT-OCR-2.0-hf``: presets ``plain``/``format``). ``transformers.generation`` gives
every runner ``min_new_tokens`` far above any limit used here, so random weights never end a
completion early: each ends at its token limit (16 unless the request says) or at a stop string.
Random weights write nonsense, so the tests assert token counts, finish reasons, streaming against
non-streaming, processes and memory figures, never the text.

The tests run in file order: listing, loading, chat, cancel, side by side, presets, unload, and
last the check that the daemon itself still maps no torch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import openai
import pytest
from PIL import Image

from tests.support.daemon import (
    assert_openai_error,
    mapped_files,
    pid_alive,
    runner_info,
    running_daemon,
    wait_until,
)
from tests.support.openapi import validate
from tests.support.render import data_url

QWEN, LLAVA = "ocrd-test/tiny-qwen2-vl", "ocrd-test/tiny-llava"
QWEN_CATALOG, GOT = "Qwen/Qwen2-VL-2B-Instruct", "stepfun-ai/GOT-OCR-2.0-hf"
NOT_DOWNLOADED = "Qwen/Qwen2.5-VL-3B-Instruct"  # a catalog model absent from this hub
DEFAULT_TOKENS = 16  # transformers.max_new_tokens
NEVER_EOS = 100_000  # transformers.generation.min_new_tokens
CHAT_MODELS = (QWEN, LLAVA)


def png(size: tuple[int, int], color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = (png((96, 64), "white"), png((48, 112), "gray"))


def messages(images: int = 1, text: str | None = "Read the text in this image.") -> list[dict]:
    parts = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": data_url(data)}} for data in IMAGES[:images]]
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_model

    hub_dir = tmp_path_factory.mktemp("hf-home") / "hub"
    for kind, repo_id in (("qwen2_vl", QWEN), ("llava", LLAVA), ("qwen2_vl", QWEN_CATALOG),
                          ("got_ocr2", GOT)):
        build_tiny_model(kind, hub_dir, repo_id=repo_id)
    return hub_dir


@pytest.fixture(scope="module")
def daemon(hub):
    config = {
        "cache": {"hub_dir": hub},
        "transformers": {"max_new_tokens": DEFAULT_TOKENS, "generation": {"min_new_tokens": NEVER_EOS}},
    }
    with running_daemon(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.openai_client() as client:
        yield client


def chat(client, model: str, **kwargs):
    return client.chat.completions.create(model=model, messages=kwargs.pop("messages", messages()),
                                          temperature=0, **kwargs)


def stream(client, model: str, **kwargs) -> list:
    return list(chat(client, model, stream=True, stream_options={"include_usage": True}, **kwargs))


def streamed_text(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: list) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# --- what is served --------------------------------------------------------------------------------


def test_models_lists_cached_models_next_to_the_builtin_ones(client, daemon):
    raw = client.models.with_raw_response.list()
    validate("ListModelsResponse", raw.http_response.json())
    cards = {card["id"]: card for card in raw.http_response.json()["data"]}
    assert set(cards) == {"builtin/ppocr", "builtin/tesseract", QWEN, LLAVA, QWEN_CATALOG, GOT}
    for model in (QWEN, LLAVA, QWEN_CATALOG, GOT):
        assert cards[model]["ocrd"]["engine"] == "transformers"
        assert cards[model]["ocrd"]["state"] == "not_loaded"
    # Uncatalogued: listed by repo id, facts inferred; catalogued: by id, with the catalog's aliases.
    assert cards[QWEN]["ocrd"]["aliases"] == []
    assert "not in ocrd's catalog" in cards[QWEN]["ocrd"]["description"]
    assert "got-ocr2" in cards[GOT]["ocrd"]["aliases"]
    assert client.models.retrieve("qwen2-vl-2b").id == QWEN_CATALOG
    assert NOT_DOWNLOADED not in cards


def test_a_catalog_model_not_in_the_cache_is_a_404_naming_ocrctl_pull(client, daemon):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, "qwen2.5-vl-3b", max_tokens=2)
    assert f"ocrctl pull {NOT_DOWNLOADED}" in caught.value.message
    with daemon.http() as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json={
            "model": NOT_DOWNLOADED, "messages": messages()}), 404)
    assert error["code"] == "model_not_downloaded" and "ocrctl pull" in error["message"]
    assert daemon.runner_pids() == []  # nothing was started for it


# --- loading ---------------------------------------------------------------------------------------


def test_ocrctl_load_streams_progress_and_ps_shows_a_live_transformers_runner(daemon, hub):
    result = daemon.ocrctl("load", QWEN)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(QWEN) for line in lines), result.stdout
    assert lines[-1] == f"{QWEN} is ready"
    stages = [line.split("  ")[1] for line in lines[:-1]]
    order = ["starting", "loading processor", "loading weights", "warm-up", "ready"]
    assert all(stage in stages for stage in order), stages
    assert [stages.index(stage) for stage in order] == sorted(stages.index(stage) for stage in order)
    assert any("loading weights" in line and "shards loaded 1/1" in line for line in lines), result.stdout

    model = daemon.ps()[QWEN]
    assert model["state"] == "MODEL_STATE_READY" and model["engine"] == "transformers"
    assert model["device"] == "cpu"
    assert pid_alive(model["pid"]) and model["pid"] in daemon.runner_pids()
    assert int(model["memory_bytes"]) > 50_000_000  # the RSS of a process holding torch and a model
    info = runner_info(model["pid"])
    assert info["repo_id"] == QWEN and info["quantization"] == "none" and info["dtype"] == "float32"
    # The config's transformers.max_new_tokens and .generation reached the runner.
    argv = Path(f"/proc/{model['pid']}/cmdline").read_bytes().decode().split("\0")
    options = json.loads(argv[argv.index("--options") + 1])
    assert options["generation"] == {"max_new_tokens": DEFAULT_TOKENS, "min_new_tokens": NEVER_EOS}
    assert options["cache_dir"] == str(hub) and options["offline"] is True


# --- chat ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_one_image_and_two_images(client, model):
    one = chat(client, model, messages=messages(images=1))
    two = chat(client, model, messages=messages(images=2))
    for reply in (one, two):
        validate("CreateChatCompletionResponse", reply.to_dict())
        assert reply.model == model
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == DEFAULT_TOKENS
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # The second image's placeholder tokens are part of the prompt.
    assert two.usage.prompt_tokens > one.usage.prompt_tokens


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_equals_non_stream_at_temperature_0(client, model):
    whole = chat(client, model, messages=messages(images=2))
    chunks = stream(client, model, messages=messages(images=2))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.to_dict())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # include_usage
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_max_tokens_ends_with_length_after_exactly_that_many_tokens(client, model):
    reply = chat(client, model, max_tokens=5)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    chunks = stream(client, model, max_tokens=5)
    assert finish_reasons(chunks) == ["length"] and chunks[-1].usage.completion_tokens == 5
    assert streamed_text(chunks) == reply.choices[0].message.content


def pick_stop(text: str) -> str:
    """A stop string from the model's own output (random weights: any text will do), at its first
    occurrence where it is taken from, free of the replacement character of cut UTF-8."""
    for size in (2, 1):
        for start in range(1, len(text) - size + 1):  # not at 0: the cut output is then non-empty
            candidate = text[start:start + size]
            if "\ufffd" not in candidate and text.find(candidate) == start:
                return candidate
    raise AssertionError(f"no stop-string candidate in {text!r}")


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_a_stop_string_cuts_the_output_before_it(client, model):
    text = chat(client, model).choices[0].message.content
    stop = pick_stop(text)
    cut = chat(client, model, stop=[stop])
    validate("CreateChatCompletionResponse", cut.to_dict())
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert 1 <= cut.usage.completion_tokens < DEFAULT_TOKENS
    chunks = stream(client, model, stop=stop)
    assert streamed_text(chunks) == cut.choices[0].message.content
    assert finish_reasons(chunks) == ["stop"] and chunks[-1].usage == cut.usage


def test_cancelling_a_stream_stops_its_generation_and_frees_the_model(client, daemon):
    long = 2000
    pid = daemon.ps()[QWEN]["pid"]
    with chat(client, QWEN, max_tokens=long, stream=True) as chunks:
        received = 0
        for chunk in chunks:
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received >= 3:
                break  # leaving the block closes the connection mid-stream
    # The next request is served (the openai client's timeout is the hang guard)...
    reply = chat(client, QWEN, max_tokens=3)
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"
    # ...the lease of the cancelled stream was returned...
    wait_until(lambda: daemon.ps()[QWEN]["in_flight"] == 0, timeout=30, message="in_flight back to 0")
    # ...and the runner stopped generating instead of running to its limit.
    recent = runner_info(pid)["recent_generations"]
    cancelled = [g for g in recent if g["cancelled"]]
    assert cancelled and cancelled[-1]["completion_tokens"] < long, recent
    assert recent[-1] == {"completion_tokens": 3, "cancelled": False}
    assert daemon.ps()[QWEN]["pid"] == pid


def test_a_non_streaming_client_that_hangs_up_stops_its_generation(client, daemon):
    import httpx

    long = 2000
    pid = daemon.ps()[QWEN]["pid"]
    ended = runner_info(pid)["generations"]
    body = {"model": QWEN, "messages": messages(), "max_tokens": long, "temperature": 0}
    # The read timeout makes httpx hang up mid-request, as an impatient client would.
    impatient = httpx.Timeout(60, read=1.0)
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=daemon.base_url, timeout=impatient) as raw:
        raw.post("/v1/chat/completions", json=body)
    wait_until(lambda: daemon.ps()[QWEN]["in_flight"] == 0, timeout=60, message="in_flight back to 0")
    # The daemon returns the lease when it hangs up on the runner; the runner's generation ends a
    # token later, in its own thread.
    wait_until(lambda: runner_info(pid)["generations"] > ended, timeout=60, message="the generation ended")
    recent = runner_info(pid)["recent_generations"]
    assert recent[-1]["cancelled"] and recent[-1]["completion_tokens"] < long, recent
    reply = chat(client, QWEN, max_tokens=3)
    assert reply.usage.completion_tokens == 3


# --- several models ------------------------------------------------------------------------------


def test_two_models_side_by_side_have_their_own_runners(client, daemon):
    for model in CHAT_MODELS:
        assert chat(client, model, max_tokens=2).usage.completion_tokens == 2
    ps = daemon.ps()
    pids = {model: ps[model]["pid"] for model in CHAT_MODELS}
    assert all(ps[model]["state"] == "MODEL_STATE_READY" for model in CHAT_MODELS)
    assert len(set(pids.values())) == 2 and all(pid_alive(pid) for pid in pids.values())
    assert set(pids.values()) <= set(daemon.runner_pids())
    assert {runner_info(pid)["repo_id"] for pid in pids.values()} == set(CHAT_MODELS)
    for model in reversed(CHAT_MODELS):  # both still answer, on the same runners
        assert chat(client, model, max_tokens=3).usage.completion_tokens == 3
    assert {model: daemon.ps()[model]["pid"] for model in CHAT_MODELS} == pids


# --- the catalog: aliases and presets ------------------------------------------------------------


def test_catalog_alias_and_default_preset_on_a_cached_catalog_model(client):
    """``Qwen/Qwen2-VL-2B-Instruct`` here is the same tiny model as ``ocrd-test/tiny-qwen2-vl``
    (same recipe, same bytes): an image-only request to the catalog model gets its default preset's
    prompt, so it must equal the uncatalogued model asked with that prompt written out."""
    from ocrd.catalog.catalog import default_entries, render_preset

    entry = next(e for e in default_entries() if e.id == QWEN_CATALOG)
    prompt = render_preset(entry, None, None, engine="transformers").prompt
    assert prompt
    images_then_text = [{"role": "user", "content": [
        *messages(text=None)[0]["content"], {"type": "text", "text": prompt}]}]

    preset = chat(client, "qwen2-vl-2b", messages=messages(text=None), max_tokens=8)
    written = chat(client, QWEN, messages=images_then_text, max_tokens=8)
    bare = chat(client, QWEN, messages=messages(text=None), max_tokens=8)
    assert preset.model == QWEN_CATALOG
    assert preset.usage == written.usage
    assert preset.choices[0].message.content == written.choices[0].message.content
    assert bare.usage.prompt_tokens < preset.usage.prompt_tokens  # the uncatalogued one has no preset


def test_got_ocr2_presets_answer_and_an_unknown_one_lists_them(client, daemon):
    plain = chat(client, "got-ocr2", messages=messages(text=None), max_tokens=4)
    formatted = chat(client, "got-ocr2:format", messages=messages(text=None), max_tokens=4)
    for reply in (plain, formatted):
        validate("CreateChatCompletionResponse", reply.to_dict())
        assert reply.model == GOT
        assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"
    with daemon.http() as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json={
            "model": "got-ocr2:poetry", "messages": messages(text=None), "max_tokens": 4}), 400)
    assert error["param"] == "model"
    assert "poetry" in error["message"] and "plain" in error["message"] and "format" in error["message"]


def test_got_ocr2_format_preset_reaches_the_processor(client):
    # GotOcr2Processor writes "OCR: " or, with format=True, "OCR with format: " into the prompt.
    plain = chat(client, "got-ocr2:plain", messages=messages(text=None), max_tokens=2)
    formatted = chat(client, "got-ocr2:format", messages=messages(text=None), max_tokens=2)
    assert formatted.usage.prompt_tokens > plain.usage.prompt_tokens


# --- unloading, and the daemon itself --------------------------------------------------------------


def test_unload_ends_the_runner_and_the_model_is_not_loaded(daemon):
    model = daemon.ps()[LLAVA]
    pid = model["pid"]
    assert pid_alive(pid)
    result = daemon.ocrctl("unload", LLAVA)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"unloaded {LLAVA}")
    assert not pid_alive(pid) and pid not in daemon.runner_pids()  # unload returns once it is gone
    assert LLAVA not in daemon.ps()
    listed = {m["id"]: m for m in json.loads(daemon.ocrctl("models", "--json").stdout)["models"]}
    assert listed[LLAVA]["state"] == "MODEL_STATE_NOT_LOADED" and listed[LLAVA]["pid"] == 0


def test_the_daemon_still_maps_no_torch_or_transformers_after_serving_them(daemon):
    assert any(m["engine"] == "transformers" for m in daemon.ps().values())  # it has been serving them
    mapped = mapped_files(daemon.pid)
    assert any("grpc" in path for path in mapped), sorted(mapped)[:20]  # the check sees libraries
    assert [p for p in mapped if "torch" in p.lower() or "transformers" in p.lower()] == []
    # ...while its runners do map torch.
    runner = daemon.ps()[QWEN]["pid"]
    assert any("torch" in path for path in mapped_files(runner))
