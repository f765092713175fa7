"""``ocrctl mode explain`` for real: the real ocrctl against the real control server, whose real
Scheduler plans with FakeNvml GPUs and a cache holding real safetensors headers."""

from __future__ import annotations

import asyncio
import json

import pytest

from ocrctl.__main__ import main
from tests.support.control import planning_server
from tests.support.fake_nvml import GIB, FakeDevice, FakeNvml, two_gpus
from tests.support.sized_models import cache_model, vlm_tensors

QWEN_2B = "Qwen/Qwen2-VL-2B-Instruct"
MIB = 2**20


@pytest.fixture
def hub(tmp_path):
    cache_model(tmp_path, QWEN_2B, vlm_tensors(vision=644 * MIB, embeddings=224 * MIB, linear=1240 * MIB))
    return tmp_path


async def ocrctl(capsys, address: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = await asyncio.to_thread(main, ["--address", address, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


async def test_explain_prints_the_decision_then_every_reason_as_a_bullet(socket_dir, hub, capsys):
    async with planning_server(socket_dir, hub, two_gpus()) as (address, _):
        rc, out, err = await ocrctl(capsys, address, "mode", "explain", "qwen2-vl-2b", "--quant", "8bit")
    assert rc == 0 and err == ""
    head, *bullets = out.splitlines()
    assert head.startswith(f"{QWEN_2B}: transformers on cuda:0, 8-bit, about ") and head.endswith(" GiB")
    assert bullets and all(line.startswith("  - ") for line in bullets)
    assert bullets[0].startswith("  - transformers 8-bit fits: it needs about")


async def test_explain_of_a_model_that_does_not_fit_says_what_is_missing_and_exits_0(socket_dir, hub, capsys):
    small = FakeNvml([FakeDevice("NVIDIA T400", "GPU-33333333-aaaa-bbbb-cccc-000000000000",
                                 total=4 * GIB, used=2 * GIB)])
    async with planning_server(socket_dir, hub, small) as (address, _):
        rc, out, _ = await ocrctl(capsys, address, "mode", "explain", QWEN_2B, "--mode", "transformers",
                                  "--quant", "none")
    head, first, *_ = out.splitlines()
    assert rc == 0
    assert head.startswith(f"{QWEN_2B}: does not fit: ") and head.endswith(" GiB missing on cuda:0")
    assert first.startswith("  - does not fit: transformers, unquantized needs about")


async def test_explain_json_prints_the_message(socket_dir, hub, capsys):
    async with planning_server(socket_dir, hub, two_gpus()) as (address, _):
        rc, out, _ = await ocrctl(capsys, address, "--json", "mode", "explain", "qwen2-vl-2b", "--mode", "auto")
    answer = json.loads(out)
    assert rc == 0
    assert (answer["model"], answer["engine"], answer["device"], answer["fits"]) == (
        QWEN_2B, "transformers", "cuda:0", True)
    assert int(answer["estimated_bytes"]) > 0 and answer["reasons"]


# dots.ocr is in the catalog (3.04B parameters, 1.2B of them vision) but not in this cache. On an
# 8 GiB card its catalog sizes need about 8.4 GiB unquantized and 6.7 GiB in 8-bit. The process
# launcher with ocrd's own interpreter (no vllm package in the test venv) leaves vLLM out
# whatever Docker this host has, so the transformers engine is the planner's choice.
DOTS = "rednote-hilab/dots.ocr"
NOT_DOWNLOADED = {"vllm": {"launcher": "process"}}


def eight_gib_card() -> FakeNvml:
    return FakeNvml([FakeDevice("NVIDIA GeForce RTX 4060", "GPU-44444444-aaaa-bbbb-cccc-000000000000",
                                total=8 * GIB, used=0)])


async def test_explain_of_a_catalog_model_not_downloaded_plans_from_the_catalog_and_says_how_to_pull_it(
        socket_dir, hub, capsys):
    async with planning_server(socket_dir, hub, eight_gib_card(), **NOT_DOWNLOADED) as (address, _):
        rc, out, err = await ocrctl(capsys, address, "mode", "explain", "dots.ocr")
    assert rc == 0 and err == ""
    head, *bullets = out.splitlines()
    assert head.startswith(f"{DOTS}: transformers on cuda:0, 8-bit, about ") and head.endswith(" GiB")
    assert bullets[0].startswith(f"  - {DOTS} is not downloaded: ")
    assert bullets[0].endswith(f"with `ocrctl pull {DOTS}`")
    assert any("sizes from the catalog" in line for line in bullets)
    assert any(line.startswith("  - transformers unquantized would need about") for line in bullets)


async def test_explain_json_of_a_model_not_downloaded_carries_the_decision_and_the_pull_hint(
        socket_dir, hub, capsys):
    async with planning_server(socket_dir, hub, eight_gib_card(), **NOT_DOWNLOADED) as (address, _):
        rc, out, _ = await ocrctl(capsys, address, "--json", "mode", "explain", "dots.ocr")
    answer = json.loads(out)
    assert rc == 0
    assert (answer["model"], answer["engine"], answer["device"], answer["quantization"], answer["fits"]) == (
        DOTS, "transformers", "cuda:0", "8bit", True)
    assert "not downloaded" in answer["reasons"][0] and f"ocrctl pull {DOTS}" in answer["reasons"][0]


async def test_a_load_of_a_model_not_downloaded_still_fails_with_the_pull_hint_after_an_explain(
        socket_dir, hub, capsys):
    async with planning_server(socket_dir, hub, eight_gib_card(), **NOT_DOWNLOADED) as (address, _):
        assert (await ocrctl(capsys, address, "mode", "explain", "dots.ocr"))[0] == 0
        rc, out, err = await ocrctl(capsys, address, "load", "dots.ocr")
    assert rc == 1 and out == ""
    assert err.strip() == (f"ocrctl: model {DOTS!r} is not downloaded into the Hugging Face cache at "
                           f"{hub}; fetch it with `ocrctl pull {DOTS}`")
