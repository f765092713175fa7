"""``systemctl reload`` (SIGHUP) on a real ``ocrd serve``, one test per section of the settings.

Every setting either applies on reload (from the next request, connection or load) or is one of
the few bound at start (``ocrd.daemon.RESTART_ONLY``): then the reload logs a warning naming it
and the daemon goes on with the running value until a restart. Each test starts its own daemon,
changes keys of one section in the file, reloads (``RunningDaemon.reload``: RELOADING=1, READY=1,
the file accepted) and observes the new value in what the daemon does, or the warning and the old
value still in use. docs/systemd.md ("Reloading the configuration") lists which is which.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from tests.support.daemon import (
    assert_openai_error,
    deep_merge,
    free_port,
    ocr_messages,
    runner_socket,
    running_daemon,
)
from tests.support.fake_nvml import GIB, FakeDevice, nvml_env
from tests.support.fake_upstream import FakeUpstream
from tests.support.render import char_accuracy, render_text_image
from tests.support.sized_models import cache_model, vlm_tensors

PPOCR, TESSERACT = "builtin/ppocr", "builtin/tesseract"
QWEN = "Qwen/Qwen2-VL-2B-Instruct"  # a catalog model that runs on transformers and vLLM
UNLISTED = "org/vlm-a"  # a cached model the catalog does not know (served by transformers)
MIB = 2**20
# ~2.3B parameters: transformers unquantized needs about 5.4 GiB on a GPU.
TENSORS = vlm_tensors(vision=256 * MIB, embeddings=512 * MIB, linear=1024 * MIB)
CARD = FakeDevice("NVIDIA Test", "GPU-00000000-aaaa-bbbb-cccc-000000000000", total=12 * GIB, used=0)
ORIGIN = "https://app.example.com"


def reload(daemon: Any, **changes: Any) -> None:
    daemon.reload(deep_merge(daemon.config, changes))


def restart_warning(key: str, running: str) -> str:
    return f"{key} changed; it takes effect after a restart (until then: {running})"


def models(daemon: Any) -> dict[str, dict[str, Any]]:
    """``ocrctl models --json`` as {model id: model}."""
    result = daemon.ocrctl("models", "--json")
    assert result.returncode == 0, result.stderr
    return {m["id"]: m for m in json.loads(result.stdout)["models"]}


def explain(daemon: Any, model: str, engine: str = "") -> pb.ExplainModeResponse:
    """The ExplainMode RPC (``ocrctl mode explain``) over the real control socket."""
    with grpc.insecure_channel(daemon.address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        return stub.ExplainMode(pb.ExplainModeRequest(model=model, engine=engine), timeout=60)


def runner_options(pid: int) -> dict[str, Any]:
    """The ``--options`` a runner process was started with."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return json.loads(argv[argv.index("--options") + 1])


def load(daemon: Any, model: str) -> int:
    """Loads ``model`` with ocrctl; the pid of its runner."""
    result = daemon.ocrctl("load", model)
    assert result.returncode == 0, result.stderr
    return daemon.ps()[model]["pid"]


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A Hugging Face cache holding a catalog model and an unlisted one (real safetensors headers,
    sparse data)."""
    for model in (QWEN, UNLISTED):
        cache_model(tmp_path / "hub", model, TENSORS)
    return tmp_path / "hub"


# --- top-level keys ---------------------------------------------------------------------------


def test_log_level_applies_on_reload():
    with running_daemon({"log_level": "info"}) as daemon:
        assert httpx.get(daemon.base_url + "/health?before=reload").status_code == 200
        # uvicorn logs an access line before it sends the response: had there been one, it is there.
        assert "/health?before=reload" not in daemon.stderr()
        reload(daemon, log_level="debug")
        assert httpx.get(daemon.base_url + "/health?after=reload").status_code == 200
        assert 'GET /health?after=reload HTTP/1.1" 200' in daemon.stderr()


def test_default_model_applies_on_reload():
    with running_daemon() as daemon:

        def default_model() -> str:
            result = daemon.ocrctl("status", "--json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)["default_model"]

        assert default_model() == PPOCR
        reload(daemon, default_model=TESSERACT)
        assert default_model() == TESSERACT


def test_runtime_dir_waits_for_a_restart_and_runners_keep_the_checked_one():
    with running_daemon() as daemon:
        elsewhere = daemon.dir / "elsewhere"
        reload(daemon, runtime_dir=elsewhere)
        assert restart_warning("runtime_dir", str(daemon.runtime_dir)) in daemon.stderr()
        pid = load(daemon, PPOCR)
        assert runner_socket(pid).parent == daemon.runtime_dir / "runners"
        assert not elsewhere.exists()


# --- sections ---------------------------------------------------------------------------------


def test_http_cors_origins_apply_on_reload_and_a_new_port_waits_for_a_restart():
    def preflight(daemon: Any) -> httpx.Response:
        return httpx.options(daemon.base_url + "/v1/chat/completions",
                             headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})

    with running_daemon() as daemon:
        assert "access-control-allow-origin" not in preflight(daemon).headers
        new_port = free_port()
        reload(daemon, http={"cors_origins": [ORIGIN], "port": new_port})
        answer = preflight(daemon)  # on the port it was started with
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert restart_warning("http.port", str(daemon.port)) in daemon.stderr()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", new_port), timeout=5).close()


def test_grpc_socket_settings_wait_for_a_restart():
    with running_daemon() as daemon:
        reload(daemon, grpc={"socket_mode": "0600"})
        assert restart_warning("grpc.socket_mode", "0660") in daemon.stderr()
        assert os.stat(daemon.socket_path).st_mode & 0o777 == 0o660
        assert daemon.ocrctl("status").returncode == 0


def test_limits_max_body_bytes_applies_on_reload():
    lines = ["limits apply on reload"]
    body = json.dumps({"model": "ppocr", "messages": ocr_messages(render_text_image(lines))}).encode()
    assert 2_000 < len(body) < 200_000

    def post(daemon: Any) -> httpx.Response:
        with daemon.http() as http:
            return http.post("/v1/chat/completions", content=body,
                             headers={"Content-Type": "application/json"})

    with running_daemon({"limits": {"max_body_bytes": 2_000}}) as daemon:
        error = assert_openai_error(post(daemon), 413)
        assert error["message"] == "request body is larger than 2000 bytes (limits.max_body_bytes)"
        reload(daemon, limits={"max_body_bytes": 200_000})
        answer = post(daemon)
        assert answer.status_code == 200, answer.text
        assert char_accuracy(lines[0], answer.json()["choices"][0]["message"]["content"]) >= 0.9


def test_scheduler_keep_alive_and_max_loaded_models_apply_on_reload():
    with running_daemon() as daemon:
        load(daemon, PPOCR)
        reload(daemon, scheduler={"keep_alive": "17m", "max_loaded_models": 1})
        assert {m["keep_alive_seconds"] for m in models(daemon).values()} == {17 * 60}
        load(daemon, TESSERACT)  # one model at most now: the idle ppocr makes way
        assert list(daemon.ps()) == [TESSERACT]


def test_builtin_options_apply_to_the_next_load_and_the_tesseract_command_waits_for_a_restart():
    with running_daemon() as daemon:
        loaded = load(daemon, PPOCR)
        reload(daemon, builtin={"ppocr_det_limit_side_len": 1280, "tesseract_cmd": "/nonexistent/tesseract"})
        assert restart_warning("builtin.tesseract_cmd", "tesseract") in daemon.stderr()
        # A reload restarts no runner: the loaded one keeps the options it started with.
        assert daemon.ps()[PPOCR]["pid"] == loaded
        assert runner_options(loaded)["det_limit_side_len"] == 960
        assert daemon.ocrctl("unload", PPOCR).returncode == 0
        assert runner_options(load(daemon, PPOCR))["det_limit_side_len"] == 1280
        assert runner_options(load(daemon, TESSERACT))["tesseract_cmd"] == "tesseract"


def test_transformers_python_applies_on_reload(hub):
    with running_daemon({"cache": {"hub_dir": hub}}) as daemon, daemon.http() as http:
        assert http.get(f"/v1/models/{UNLISTED}").json()["id"] == UNLISTED
        reload(daemon, transformers={"python": "/nonexistent/python"})
        error = assert_openai_error(http.get(f"/v1/models/{UNLISTED}"), 503)
        assert "cannot run /nonexistent/python (transformers.python)" in error["message"]


def test_cache_hub_dir_applies_on_reload(hub, tmp_path):
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    with running_daemon({"cache": {"hub_dir": empty}}) as daemon, daemon.http() as http:
        assert_openai_error(http.get(f"/v1/models/{UNLISTED}"), 404)
        reload(daemon, cache={"hub_dir": hub})
        assert http.get(f"/v1/models/{UNLISTED}").json()["id"] == UNLISTED


def test_planner_engine_applies_on_reload(hub):
    asked = "the vllm engine is asked for (planner.engine)"
    with running_daemon({"cache": {"hub_dir": hub}}) as daemon:
        before = explain(daemon, QWEN)
        assert before.engine == "transformers" and asked not in before.reasons
        reload(daemon, planner={"engine": "vllm"})
        assert asked in explain(daemon, QWEN).reasons


def test_gpu_reserve_applies_on_reload(hub):
    with running_daemon({"cache": {"hub_dir": hub}}, env=nvml_env(CARD)) as daemon:
        fits = explain(daemon, QWEN)
        assert (fits.engine, fits.device, fits.fits) == ("transformers", "cuda:0", True)
        reload(daemon, gpu={"reserve_mib": 11_000})  # 1 GiB of the 12 GiB card left to plan with
        refused = explain(daemon, QWEN)
        assert not refused.fits and refused.shortfall_bytes > 0
        assert "only 1.3 GiB is usable there" in refused.reasons[0]


def test_vllm_settings_apply_on_reload_and_the_instance_waits_for_a_restart(hub):
    config = {"cache": {"hub_dir": hub},
              "vllm": {"launcher": "process", "python": "/nonexistent/vllm-a", "instance": "first"}}
    with running_daemon(config) as daemon:
        assert any("cannot run /nonexistent/vllm-a (vllm.python)" in reason
                   for reason in explain(daemon, QWEN, engine="vllm").reasons)
        reload(daemon, vllm={"python": "/nonexistent/vllm-b", "instance": "second"})
        assert any("cannot run /nonexistent/vllm-b (vllm.python)" in reason
                   for reason in explain(daemon, QWEN, engine="vllm").reasons)
        assert restart_warning("vllm.instance", "first") in daemon.stderr()


def test_models_sections_apply_on_reload():
    with running_daemon() as daemon:
        reload(daemon, models={"ppocr": {"keep_alive": "42s", "queue_size": 3},
                               "tesseract": {"pinned": True}})
        listed = models(daemon)
        ppocr, tesseract = listed[PPOCR], listed[TESSERACT]
        assert (ppocr["keep_alive_seconds"], ppocr["queue_capacity"], ppocr["pinned"]) == (42, 3, False)
        assert (tesseract["pinned"], tesseract["queue_capacity"]) == (True, 16)


def test_upstreams_are_added_and_removed_on_reload():
    with FakeUpstream("org/early") as early, FakeUpstream("org/late") as late:
        with running_daemon({"upstreams": [{"model": "org/early", "url": early.url}]}) as daemon:
            assert "org/early" in models(daemon) and "org/late" not in models(daemon)
            reload(daemon, upstreams=[{"model": "org/late", "url": late.url}])
            listed = models(daemon)
            assert "org/late" in listed and "org/early" not in listed
            with daemon.openai_client() as client:
                reply = client.chat.completions.create(
                    model="org/late", messages=[{"role": "user", "content": "after reload"}])
            assert reply.choices[0].message.content == "fake-vllm org/late read: after reload"
