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
