"""Transformers runners coming and going under a real ``ocrd serve``: keep-alive expiry, a load
that fails on damaged weights, and 8-bit / 4-bit loads (bitsandbytes on the CPU) chosen with
``ocrctl load --quant``.

One daemon for the module, with its own hub: tiny Qwen2-VL (quantization), tiny LLaVA with a 1 s
keep-alive (the reaper looks every 0.2 s), and a LLaVA whose safetensors file was cut short.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.support.daemon import (
    deep_merge,
    pid_alive,
    runner_command_lines,
    runner_info,
    running_daemon,
    wait_until,
)
from tests.support.render import data_url

QWEN, LLAVA, DAMAGED = "ocrd-test/tiny-qwen2-vl", "ocrd-test/tiny-llava", "ocrd-test/tiny-llava-damaged"
KEEP_ALIVE = 1.0
NEVER_EOS = 100_000  # transformers.generation.min_new_tokens: random weights never stop early


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_model, corrupt_weights

    hub_dir = tmp_path_factory.mktemp("hf-home") / "hub"
    build_tiny_model("qwen2_vl", hub_dir, repo_id=QWEN)
    build_tiny_model("llava", hub_dir, repo_id=LLAVA)
    corrupt_weights(build_tiny_model("llava", hub_dir, repo_id=DAMAGED))
    return hub_dir


@pytest.fixture(scope="module")
def daemon(hub):
    config = {
        "cache": {"hub_dir": hub},
        "scheduler": {"reap_interval": "0.2s"},
        "transformers": {"max_new_tokens": 16, "generation": {"min_new_tokens": NEVER_EOS}},
        # Pinned until its keep-alive test has read its runner's pid, then unpinned by a reload.
        "models": {LLAVA: {"keep_alive": f"{KEEP_ALIVE:g}s", "pinned": True}},
    }
    with running_daemon(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.openai_client() as client:
        yield client


def png(size: tuple[int, int], color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def complete(client, model: str, max_tokens: int):
    content = [{"type": "text", "text": "Read this."},
               {"type": "image_url", "image_url": {"url": data_url(png((96, 64), "white"))}}]
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          temperature=0, max_tokens=max_tokens)


def runners_of(daemon, model: str) -> list[int]:
    """This daemon's runner processes (zombies included) serving ``model``."""
    return [pid for pid, cmd in runner_command_lines(daemon).items() if f"--model-id {model} " in cmd]


# --- keep-alive --------------------------------------------------------------------------------------


def test_an_idle_transformers_runner_exits_on_its_own_after_its_keep_alive(client, daemon):
    assert complete(client, LLAVA, 3).usage.completion_tokens == 3
    [pid] = runners_of(daemon, LLAVA)  # pinned: it cannot go while the test looks
    assert daemon.ps()[LLAVA]["pid"] == pid
    daemon.reload(deep_merge(daemon.config, {"models": {LLAVA: {"pinned": False}}}))
    listed = {m["id"]: m for m in json.loads(daemon.ocrctl("models", "--json").stdout)["models"]}
    assert listed[LLAVA]["keep_alive_seconds"] == KEEP_ALIVE and listed[LLAVA]["engine"] == "transformers"
    wait_until(lambda: not pid_alive(pid), timeout=60, message="the idle runner exiting")
    wait_until(lambda: LLAVA not in daemon.ps(), timeout=10, message="ps no longer listing it")
    assert runners_of(daemon, LLAVA) == []


# --- a load that fails -------------------------------------------------------------------------------


def test_damaged_weights_fail_the_load_with_one_line_and_leave_no_runner(daemon):
    result = daemon.ocrctl("load", DAMAGED)
    assert result.returncode == 1
    assert result.stderr.startswith("ocrctl: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "weights" in result.stderr and f"ocrctl pull {DAMAGED}" in result.stderr
    assert "Traceback" not in result.stderr

    model = daemon.ps()[DAMAGED]
    assert model["state"] == "MODEL_STATE_FAILED" and "weights" in model["error"]
    assert model.get("pid", 0) == 0
    assert runners_of(daemon, DAMAGED) == []


# --- quantization ------------------------------------------------------------------------------------


def load(daemon, *args: str) -> dict:
    result = daemon.ocrctl("load", QWEN, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{QWEN} is ready"
    model = daemon.ps()[QWEN]
    assert model["state"] == "MODEL_STATE_READY" and pid_alive(model["pid"])
    return model


def unload(daemon, pid: int) -> None:
    assert daemon.ocrctl("unload", QWEN).returncode == 0
    assert not pid_alive(pid)


@pytest.fixture(scope="module")
def unquantized(daemon) -> dict:
    """What the float32 load holds: /v1/ocrd/info of the runner (then unloaded)."""
    model = load(daemon)
    info = runner_info(model["pid"])
    unload(daemon, model["pid"])
    assert info["quantization"] == "none" and set(info["parameter_dtypes"]) == {"float32"}
    assert not {"Linear8bitLt", "Linear4bit"} & set(info["linear_layers"])
    return info


QUANTIZED = {"8bit": ("Linear8bitLt", "int8"), "4bit": ("Linear4bit", "uint8")}


@pytest.fixture(scope="module")
def weight_bytes(unquantized) -> dict[str, int]:
    """Weight bytes by quantization, filled in as the loads below happen (8bit before 4bit)."""
    return {"none": unquantized["weights_bytes"]}


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_load_uses_bitsandbytes_layers_holds_less_and_still_generates(
        daemon, client, weight_bytes, quantization):
    model = load(daemon, "--quant", quantization)
    try:
        info = runner_info(model["pid"])
        layer, stored = QUANTIZED[quantization]
        assert info["quantization"] == quantization
        assert info["linear_layers"].get(layer, 0) > 0 and info["parameter_dtypes"].get(stored, 0) > 0
        weight_bytes[quantization] = info["weights_bytes"]
        assert weight_bytes[quantization] < weight_bytes["none"]
        if quantization == "4bit" and "8bit" in weight_bytes:
            assert weight_bytes["4bit"] < weight_bytes["8bit"]

        reply = complete(client, QWEN, 5)
        assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
        assert daemon.ps()[QWEN]["pid"] == model["pid"]  # served by the quantized runner
    finally:
        unload(daemon, model["pid"])


def test_a_load_after_a_quantized_one_is_unquantized_again(daemon, unquantized):
    model = load(daemon)
    try:
        info = runner_info(model["pid"])
        assert info["quantization"] == "none"
        assert info["weights_bytes"] == unquantized["weights_bytes"]
    finally:
        unload(daemon, model["pid"])
