"""The chat service renders a preset for the engine the leased runner really has.

The real Scheduler and planner decide the engine; the runners are FakeRunners that record the
request bodies they get. The model's prompt needs a prefix on vLLM only (as dots.ocr's image
tokens do), and in each case the engine a load picks is not the first one the host could run in
the catalog's order, which is all ocrd knows about a model before it is loaded:

* engines ("vllm", "transformers"), vLLM installed but no GPU for it: transformers on the CPU;
* engines ("transformers", "vllm"), a GPU too small for transformers and a CPU build of vLLM:
  vLLM on the CPU.

vLLM is available through the docker launcher: the directory is given a Docker engine's status
(reachable; no runner is started, the runners are fakes).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.catalog.presets import parse_presets
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.core.scheduler import Scheduler
from ocrd.errors import InvalidRequest, OcrdError
from ocrd.http.openai.chat_service import ChatService
from ocrd.http.openai.protocol import parse_chat_request
from ocrd.metrics import Metrics
from ocrd.planning.gpu import GpuProbe
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.fake_nvml import GIB, FakeDevice, FakeNvml
from tests.support.fake_runner import FakeRunner, StartPlan
from tests.support.render import data_url, render_text_image
from tests.support.sized_models import cache_model, vlm_tensors

MODEL = "org/wrapped-vlm"
PROMPT = "Extract the text content from this image."
VLLM_PREFIX = "<|img|><|imgpad|><|endofimg|>"
MIB = 2**20
DOCKER = DockerStatus(True, version="20.10.24", runtimes=("runc", "nvidia"))
# ~4B parameters: more than a 1 GiB GPU holds even in 4-bit.
TENSORS = vlm_tensors(vision=256 * MIB, embeddings=512 * MIB, linear=3072 * MIB)


def entry(engines: tuple[str, ...]) -> CatalogEntry:
    presets = parse_presets(MODEL, {"ocr": {"prompt": PROMPT, "output": "plain text"}}, {})
    return CatalogEntry(MODEL, engines=engines, presets=presets, default_preset="ocr",
                        engine_options={"vllm": {"prompt_prefix": VLLM_PREFIX}})


@dataclass(eq=False)
class RecordingRunner(FakeRunner):
    """A FakeRunner that answers chat completions and keeps the bodies it was sent."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.bodies.append(json.loads(request.content))
            message = {"role": "assistant", "content": "text"}
            return httpx.Response(200, json={
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": self.model_id,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        return httpx.AsyncClient(base_url="http://fake-runner", transport=httpx.MockTransport(answer))


@pytest.fixture(autouse=True)
async def _hang_guard():
    """A hang fails the test instead of the run (not a speed check)."""
    loop = asyncio.get_running_loop()
    handle = loop.call_later(60, lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
    yield
    handle.cancel()


@pytest.fixture
async def serve(tmp_path: Path):
    """``serve(engines, gpus, vllm_device)`` -> (service, runners made, the engine ocrd shows
    for the model before it is loaded: the first one this host could run)."""
    cache_model(tmp_path / "hub", MODEL, TENSORS)
    schedulers: list[Scheduler] = []

    def build(engines: tuple[str, ...], gpus: list[FakeDevice], vllm_device: str):
        runners: list[RecordingRunner] = []
        pids = itertools.count(5000)

        def factory(spec):
            runners.append(RecordingRunner(spec=spec, plan=StartPlan(), fake_pid=next(pids)))
            return runners[-1]

        settings = Settings(cache={"hub_dir": tmp_path / "hub"},
                            vllm={"launcher": "docker", "device": vllm_device})
        models = ModelDirectory(Catalog([entry(engines)]), settings, docker_status=lambda: DOCKER)
        scheduler = Scheduler(settings, models, factory, gpu_probe=GpuProbe(FakeNvml(gpus), environ={}))
        schedulers.append(scheduler)
        guess = scheduler.info(MODEL).engine
        return ChatService(scheduler, lambda: settings, Metrics(scheduler.models)), runners, guess

    yield build
    for scheduler in schedulers:
        await scheduler.shutdown()


async def still_connected() -> bool:
    return False


async def ask_with_an_image_alone(service: ChatService) -> Any:
    """A request the default preset applies to: an image and no text."""
    raw = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(render_text_image(["hello"]))}}]}]}
    return await service.create(raw, parse_chat_request(raw), still_connected)


def sent_prompt(runner: RecordingRunner) -> str:
    [body] = runner.bodies
    [*images, text] = body["messages"][-1]["content"]
    assert [part["type"] for part in images] == ["image_url"]
    return text["text"]


async def test_a_model_planned_onto_transformers_gets_the_prompt_without_vllms_wrapping(serve):
    service, runners, guess = serve(("vllm", "transformers"), gpus=[], vllm_device="cuda")
    assert guess == "vllm"  # what rendering before the lease would have used
    answer = await ask_with_an_image_alone(service)
    assert answer["choices"][0]["message"]["content"] == "text"
    [runner] = runners
    assert runner.engine == "transformers"
    assert sent_prompt(runner) == PROMPT


async def test_a_model_planned_onto_vllm_gets_the_prompt_with_vllms_wrapping(serve):
    small_gpu = FakeDevice("NVIDIA Test", "GPU-00000000-aaaa-bbbb-cccc-000000000000", total=1 * GIB, used=0)
    service, runners, guess = serve(("transformers", "vllm"), gpus=[small_gpu], vllm_device="cpu")
    assert guess == "transformers"  # what rendering before the lease would have used
    await ask_with_an_image_alone(service)
    [runner] = runners
    assert runner.engine == "vllm"
    assert sent_prompt(runner) == VLLM_PREFIX + PROMPT


async def test_an_unknown_preset_is_refused_before_the_model_is_loaded(serve):
    service, runners, _ = serve(("vllm", "transformers"), gpus=[], vllm_device="cuda")
    raw = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "ocrd": {"preset": "poetry"}}
    with pytest.raises(InvalidRequest, match="has no preset 'poetry'"):
        await service.create(raw, parse_chat_request(raw), still_connected)
    assert runners == []


async def test_a_runners_refusal_leaves_no_reference_cycle_holding_the_request(serve, monkeypatch):
    # The runner's error comes back through unless_disconnected's task; raised as it was, it
    # formed a cycle (error, traceback, frame, task) that kept the request's frames, and a body
    # of tens of MB with them, until a full garbage collection: memory grew request by request.
    def refusing_client(self: RecordingRunner) -> httpx.AsyncClient:
        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, json={"error": {"message": "no", "type": "invalid_request_error",
                                                      "param": None, "code": None}})

        return httpx.AsyncClient(base_url="http://fake-runner", transport=httpx.MockTransport(answer))

    monkeypatch.setattr(RecordingRunner, "client", refusing_client)
    service, _, _ = serve(("vllm", "transformers"), gpus=[], vllm_device="cuda")

    class Body(dict):  # the request, as the frames on the way hold it; weakly referenced
        pass

    raw = Body(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(render_text_image(["hello"]))}}]}])
    chat = parse_chat_request(dict(raw))
    held = weakref.ref(raw)
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(OcrdError) as caught:
            await service.create(raw, chat, still_connected)
        assert caught.value.http_status == 400
        del raw, caught
        assert held() is None, gc.get_referrers(held())
    finally:
        gc.enable()
