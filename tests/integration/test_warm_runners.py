"""Warm runners under a real ``ocrd serve`` (``scheduler.warm_runners``): real worker processes
with their engine imported take the next model of that engine, a replacement starts, their
memory shows in ``ocrctl ps``, one that dies idle is replaced by the next load, a reload to 0 ends
them, and none outlives the daemon.

One daemon for the module: tiny LLaVA and tiny Qwen2-VL on the CPU, and the builtin PP-OCR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ocrd.runners import orphans
from ocrd.runners.orphans import runner_processes
from tests.support.daemon import (
    deep_merge,
    ocr_messages,
    pid_alive,
    runner_info,
    running_daemon,
    wait_until,
)
from tests.support.render import render_text_image

LLAVA, QWEN = "ocrd-test/tiny-llava", "ocrd-test/tiny-qwen2-vl"
NEVER_EOS = 100_000  # transformers.generation.min_new_tokens: random weights never stop early
WARM_TIMEOUT = 120.0  # hang guard: importing torch takes seconds, more on a busy machine


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_model

    hub_dir = tmp_path_factory.mktemp("hf-home") / "hub"
    build_tiny_model("llava", hub_dir, repo_id=LLAVA)
    build_tiny_model("qwen2_vl", hub_dir, repo_id=QWEN)
    return hub_dir


def config_for(hub: Path, warm: int) -> dict[str, Any]:
    return {
        "cache": {"hub_dir": hub},
        "scheduler": {"warm_runners": warm},
        "transformers": {"max_new_tokens": 4, "generation": {"min_new_tokens": NEVER_EOS}},
    }


@pytest.fixture(scope="module")
def daemon(hub):
    with running_daemon(config_for(hub, 1)) as running:
        yield running


def warm_runners(daemon) -> dict[str, dict[str, Any]]:
    """``ocrctl ps --json``'s warm runners, by engine."""
    result = daemon.ocrctl("ps", "--json")
    assert result.returncode == 0, result.stderr
    return {w["engine"]: w for w in json.loads(result.stdout).get("warm_runners", [])}


def ready_warm(daemon, engine: str, other_than: int = 0) -> dict[str, Any]:
    """The warm runner of ``engine`` once it is warm (and not ``other_than``)."""
    def ready() -> dict[str, Any] | None:
        warm = warm_runners(daemon).get(engine)
        return warm if warm and warm.get("ready") and warm["pid"] != other_than else None
    return wait_until(ready, timeout=WARM_TIMEOUT, interval=0.25)


def load(daemon, model: str) -> dict[str, Any]:
    result = daemon.ocrctl("load", model)
    assert result.returncode == 0, result.stdout + result.stderr
    return daemon.ps()[model]


def command_line(pid: int) -> list[str]:
    return [arg.decode() for arg in orphans.command_line(Path(f"/proc/{pid}/cmdline").read_bytes())]


def test_a_warm_runner_per_engine_is_ready_after_start_and_shows_its_memory(daemon):
    for engine in ("builtin", "transformers"):
        warm = ready_warm(daemon, engine)
        assert warm["device"] == "cpu"
        assert int(warm["memory_bytes"]) > 20 * 2**20  # its engine is imported: not a bare Python
        pid = warm["pid"]
        assert pid in daemon.runner_pids()  # the daemon's own child
        argv = command_line(pid)
        assert argv[argv.index("--engine") + 1] == engine and "--warm" in argv
    table = daemon.ocrctl("ps")
    assert table.returncode == 0, table.stderr
    assert "warm runners" in table.stdout and "transformers" in table.stdout


def test_a_load_takes_the_warm_runner_and_a_new_one_is_warmed(daemon):
    warm = ready_warm(daemon, "transformers")
    model = load(daemon, LLAVA)
    assert model["pid"] == warm["pid"]  # the very process: handed the model, not started anew
    assert runner_info(warm["pid"])["model"] == LLAVA
    # It shows as the runner it became, in ps and to ocrctl cleanup's /proc scan (which reads the
    # model from the command line and the daemon from the environment).
    shown = command_line(warm["pid"])
    assert "--warm" not in shown and shown[shown.index("--model-id") + 1] == LLAVA, shown
    assert "--options" not in shown
    listed = {process.pid: process for process in runner_processes()}
    assert listed[warm["pid"]].model == LLAVA
    assert listed[warm["pid"]].claimed_parent == daemon.pid and not listed[warm["pid"]].daemon_gone
    replacement = ready_warm(daemon, "transformers", other_than=warm["pid"])
    assert replacement["pid"] != warm["pid"] and pid_alive(replacement["pid"])
    with daemon.openai_client() as client:
        answer = client.chat.completions.create(
            model=LLAVA, messages=ocr_messages(render_text_image(["warm"]), text="Read this."),
            max_tokens=4, temperature=0)
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 4

    # Unload A, load B: B gets the replacement.
    assert daemon.ocrctl("unload", LLAVA).returncode == 0
    model = load(daemon, QWEN)
    assert model["pid"] == replacement["pid"]
    assert runner_info(model["pid"])["model"] == QWEN
    assert daemon.ocrctl("unload", QWEN).returncode == 0


def test_the_builtin_engine_takes_its_warm_runner_too(daemon):
    warm = ready_warm(daemon, "builtin")
    model = load(daemon, "builtin/ppocr")
    assert model["pid"] == warm["pid"]
    with daemon.openai_client() as client:
        answer = client.chat.completions.create(
            model="ppocr", messages=ocr_messages(render_text_image(["HELLO WARM"])))
    assert "HELLO" in (answer.choices[0].message.content or "").upper()
    assert daemon.ocrctl("unload", "ppocr").returncode == 0


def test_a_warm_runner_that_dies_idle_is_dropped_and_the_next_load_starts_cold(daemon):
    warm = ready_warm(daemon, "transformers")
    os.kill(warm["pid"], signal.SIGKILL)
    wait_until(lambda: warm_runners(daemon).get("transformers", {}).get("pid") != warm["pid"],
               timeout=30)
    model = load(daemon, LLAVA)  # cold (or the new warm one, if it was quick): either way served
    assert model["state"] == "MODEL_STATE_READY" and model["pid"] != warm["pid"]
    ready_warm(daemon, "transformers", other_than=model["pid"])
    assert daemon.ocrctl("unload", LLAVA).returncode == 0


def test_a_reload_to_zero_ends_them_and_loads_still_work(daemon, hub):
    pids = [w["pid"] for w in (ready_warm(daemon, "transformers"), ready_warm(daemon, "builtin"))]
    daemon.reload(deep_merge(daemon.config, config_for(hub, 0)))
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30)
    assert warm_runners(daemon) == {}
    model = load(daemon, LLAVA)
    assert model["pid"] not in pids
    assert daemon.ocrctl("unload", LLAVA).returncode == 0
    daemon.reload(deep_merge(daemon.config, config_for(hub, 1)))  # back: primed again at once
    ready_warm(daemon, "transformers")
    ready_warm(daemon, "builtin")


def test_no_warm_runner_outlives_the_daemon(hub):
    with running_daemon(config_for(hub, 1)) as running:
        pids = [ready_warm(running, engine)["pid"] for engine in ("builtin", "transformers")]
        assert running.stop() == 0
        assert not any(pid_alive(pid) for pid in pids)
        assert running.surviving_runners() == []


# --- the worker's warm mode on its own ------------------------------------------------------------


def warm_worker(tmp_path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ocrd.worker", "--warm", "--engine", "builtin", "--socket-dir", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["event"] == "warm" and first["pid"] == process.pid
    return process


def assign(process: subprocess.Popen[str], argv: list[str]) -> tuple[int, list[dict[str, Any]]]:
    out, _ = process.communicate(json.dumps({"argv": argv}) + "\n", timeout=60)
    return process.returncode, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_warm_worker_refuses_a_model_of_another_engine(tmp_path):
    code, events = assign(warm_worker(tmp_path), ["--model-id", LLAVA, "--engine", "transformers",
                                                  "--socket", str(tmp_path / "a.sock")])
    assert code == 2
    assert events[-1]["event"] == "error" and "warm for builtin, not transformers" in events[-1]["message"]


def test_a_warm_worker_refuses_a_socket_outside_its_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, events = assign(warm_worker(tmp_path), ["--model-id", "builtin/ppocr", "--engine", "builtin",
                                                  "--socket", str(elsewhere / "a.sock")])
    assert code == 2 and "is not in" in events[-1]["message"]
    assert not (elsewhere / "a.sock").exists()


def test_a_warm_worker_whose_stdin_closes_exits_cleanly(tmp_path):
    process = warm_worker(tmp_path)
    out, _ = process.communicate("", timeout=60)
    assert process.returncode == 0 and out == ""
