"""Path-like model ids and revisions through the real gRPC server (real Scheduler, FakeRunners, a
real Hugging Face cache layout): every RPC that takes a model answers INVALID_ARGUMENT naming the
field, the cache and the files beside it stay as they were, and the server goes on serving.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest
from huggingface_hub import scan_cache_dir

from ocrd.config.settings import Settings
from ocrd.control.v1 import control_pb2 as pb
from tests.support.control import PPOCR, settings_for
from tests.support.tiny_models import publish_snapshot

OTHER = "ocrd-test/tiny-ocr"
HOSTILE = ["../x", "../../../../etc/passwd", "org/..", "/etc/passwd", "a/b/c", "a\\b", "a\x00b",
           "org/na\nme", "é/ñ", "a--b/c", "ppocr:layout", "x" * 300]  # fmt: skip


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    hub = tmp_path / "hub"
    for repo_id in (PPOCR, OTHER):
        src = tmp_path / "src" / repo_id.replace("/", "--")
        src.mkdir(parents=True)
        (src / "config.json").write_bytes(b"{}")
        (src / "model.safetensors").write_bytes(b"w" * 1000)
        publish_snapshot(src, hub, repo_id)
    (tmp_path / "outside.txt").write_text("keep me")  # what a traversal would reach
    return hub


@pytest.fixture
def settings(socket_dir: Path, hub_dir: Path) -> Settings:
    return settings_for(socket_dir).model_copy(update={"cache": Settings().cache.model_copy(
        update={"hub_dir": hub_dir})})


def snapshot_of(hub_dir: Path) -> set[str]:
    """Every path under the cache's parent, so that any change at all is seen."""
    return {str(path.relative_to(hub_dir.parent)) for path in hub_dir.parent.rglob("*")}


async def status_of(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return caught.value


def model_calls(stub, model: str) -> dict[str, object]:
    return {
        "LoadModel": lambda: stub.LoadModel(pb.LoadModelRequest(model=model)),
        "UnloadModel": lambda: stub.UnloadModel(pb.UnloadModelRequest(model=model)),
        "ExplainMode": lambda: stub.ExplainMode(pb.ExplainModeRequest(model=model)),
        "DeleteCache": lambda: stub.DeleteCache(pb.DeleteCacheRequest(model=model, force=True)),
        "VerifyCache": lambda: stub.VerifyCache(pb.VerifyCacheRequest(model=model)),
        "PullModel": lambda: stub.PullModel(pb.PullModelRequest(model=model)),
        "Logs": lambda: stub.Logs(pb.LogsRequest(model=model)),
        "WatchEvents": lambda: stub.WatchEvents(pb.WatchEventsRequest(model=model)),
        "Diagnose": lambda: stub.Diagnose(pb.DiagnoseRequest(model=model)),
    }


@pytest.mark.parametrize("model", HOSTILE)
async def test_every_rpc_refuses_a_path_like_model_id_and_touches_nothing(stub, hub_dir, model):
    before = snapshot_of(hub_dir)
    for name, call in model_calls(stub, model).items():
        error = await status_of(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
        assert "not a valid model name" in error.details(), (name, error.details())
    assert snapshot_of(hub_dir) == before
    assert (hub_dir.parent / "outside.txt").read_text() == "keep me"


@pytest.mark.parametrize("revision", ["../../../outside.txt", "../refs/main", "/etc", "a//b", "x\x00"])
async def test_cache_rpcs_refuse_a_path_like_revision(stub, hub_dir, revision):
    before = snapshot_of(hub_dir)
    calls = {
        "DeleteCache": lambda: stub.DeleteCache(pb.DeleteCacheRequest(model=OTHER, revision=revision)),
        "VerifyCache": lambda: stub.VerifyCache(pb.VerifyCacheRequest(model=OTHER, revision=revision)),
        "PullModel": lambda: stub.PullModel(pb.PullModelRequest(model=OTHER, revision=revision)),
    }
    for name, call in calls.items():
        error = await status_of(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
        assert "not a valid revision" in error.details(), name
    assert snapshot_of(hub_dir) == before


async def test_after_hostile_calls_the_server_still_loads_and_deletes(stub, hub_dir):
    for model in HOSTILE[:3]:
        await status_of(model_calls(stub, model)["LoadModel"])
    steps = [step async for step in stub.LoadModel(pb.LoadModelRequest(model="ppocr"))]
    assert steps[-1].state == pb.MODEL_STATE_READY
    await stub.DeleteCache(pb.DeleteCacheRequest(model=OTHER))
    assert {repo.repo_id for repo in scan_cache_dir(hub_dir).repos} == {PPOCR}
    assert (hub_dir.parent / "outside.txt").read_text() == "keep me"


def test_every_rpc_whose_request_names_a_model_is_in_the_hostile_table():
    # The check is one line per handler: a new RPC taking a model must get it, and a row above.
    service = pb.DESCRIPTOR.services_by_name["Control"]
    taking_a_model = {method.name for method in service.methods
                      if "model" in method.input_type.fields_by_name}
    assert taking_a_model == set(model_calls(None, "x"))
