"""ListCache / DeleteCache / VerifyCache through the real gRPC server (real Scheduler,
FakeRunners), and ``ocrctl cache ls`` / ``rm`` / ``verify`` through the real CLI, on a small hub in
a real HF layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import grpc.aio
import pytest
from huggingface_hub import scan_cache_dir

from ocrd.config.settings import Settings
from ocrd.control.v1 import control_pb2 as pb
from ocrd.errors import ModelNotFound
from tests.support.control import PPOCR, settings_for
from tests.support.fake_hub import tiny_safetensors
from tests.support.tiny_models import publish_snapshot, repo_folder

OTHER = "ocrd-test/tiny-ocr"
WHOLE = "ocrd-test/whole"
VLM = "ocrd-test/tiny-vlm"
WHOLE_FILES = {"config.json": b'{"model_type": "llava"}', "model.safetensors": tiny_safetensors(500)}


def publish(hub_dir: Path, repo_id: str, files: dict[str, bytes]) -> str:
    src = hub_dir.parent / "src" / repo_id.replace("/", "--") / str(len(list(hub_dir.parent.glob("src/*/*"))))
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    return publish_snapshot(src, hub_dir, repo_id)[0]


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """builtin/ppocr (loadable through FakeRunners, and in the catalog) and OTHER (two revisions,
    not in the catalog), laid out as huggingface_hub downloads them."""
    hub = tmp_path / "hub"
    publish(hub, PPOCR, {"config.json": b"{}", "model.safetensors": b"p" * 3000})
    publish(hub, OTHER, {"config.json": b"{}", "model.safetensors": b"a" * 1000})
    publish(hub, OTHER, {"config.json": b"{}", "model.safetensors": b"b" * 2000})
    return hub


@pytest.fixture
def settings(socket_dir: Path, hub_dir: Path) -> Settings:
    return settings_for(socket_dir).model_copy(update={"cache": Settings().cache.model_copy(
        update={"hub_dir": hub_dir})})


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    return caught.value


async def load_ppocr(stub) -> None:
    steps = [step async for step in stub.LoadModel(pb.LoadModelRequest(model="ppocr"))]
    assert steps[-1].state == pb.MODEL_STATE_READY


def cached(hub_dir: Path) -> set[str]:
    return {repo.repo_id for repo in scan_cache_dir(hub_dir).repos}


async def test_list_cache_shows_repos_revisions_sizes_and_catalog(stub, hub_dir):
    listing = await stub.ListCache(pb.ListCacheRequest())
    assert listing.cache_dir == str(hub_dir)
    repos = {repo.repo_id: repo for repo in listing.repos}
    assert set(repos) == {PPOCR, OTHER}
    assert listing.total_bytes == scan_cache_dir(hub_dir).size_on_disk > 6000
    other = repos[OTHER]
    assert other.repo_type == "model" and not other.in_catalog and other.loaded_by_engine == ""
    assert len(other.revisions) == 2 and other.size_bytes >= 3000
    assert sorted(list(rev.refs) for rev in other.revisions) == [[], ["main"]]
    assert all(len(rev.commit) == 40 and rev.size_bytes > 0 for rev in other.revisions)
    assert all(rev.HasField("last_modified") for rev in other.revisions)
    assert other.HasField("last_accessed") and other.HasField("last_modified")
    assert repos[PPOCR].in_catalog


async def test_list_cache_says_which_engine_holds_a_loaded_model(stub):
    await load_ppocr(stub)
    listing = await stub.ListCache(pb.ListCacheRequest())
    assert {repo.repo_id: repo.loaded_by_engine for repo in listing.repos} == {
        PPOCR: "builtin", OTHER: ""}


async def test_dry_run_reports_bytes_and_deletes_nothing(stub, hub_dir):
    before = scan_cache_dir(hub_dir).size_on_disk
    result = await stub.DeleteCache(pb.DeleteCacheRequest(model=OTHER, dry_run=True))
    assert result.freed_bytes >= 3000
    assert str(repo_folder(hub_dir, OTHER)) in result.deleted_paths
    assert scan_cache_dir(hub_dir).size_on_disk == before


async def test_delete_removes_the_repo(stub, hub_dir):
    result = await stub.DeleteCache(pb.DeleteCacheRequest(model=OTHER))
    assert result.freed_bytes >= 3000
    assert cached(hub_dir) == {PPOCR}


async def test_delete_one_revision(stub, hub_dir):
    result = await stub.DeleteCache(pb.DeleteCacheRequest(model=OTHER, revision="main"))
    assert result.freed_bytes > 0
    (repo,) = [r for r in scan_cache_dir(hub_dir).repos if r.repo_id == OTHER]
    assert len(repo.revisions) == 1 and not any(rev.refs for rev in repo.revisions)


async def test_delete_of_a_loaded_model_is_refused_and_force_unloads_it_first(stub, hub_dir, scheduler):
    await load_ppocr(stub)
    error = await rpc_error(stub.DeleteCache(pb.DeleteCacheRequest(model="ppocr")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unload" in error.details() and "--force" in error.details()
    assert PPOCR in cached(hub_dir)

    result = await stub.DeleteCache(pb.DeleteCacheRequest(model="ppocr", force=True))
    assert result.freed_bytes >= 3000
    assert cached(hub_dir) == {OTHER}
    assert scheduler.info(PPOCR).state.name == "NOT_LOADED"


async def test_a_deleted_model_is_no_longer_served_nor_a_pulled_back_one_refused(stub, hub_dir, scheduler):
    vlm = {"config.json": b'{"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}',
           "model.safetensors": tiny_safetensors(100)}
    publish(hub_dir, VLM, vlm)
    assert scheduler.resolve(VLM).id == VLM
    await stub.DeleteCache(pb.DeleteCacheRequest(model=VLM))
    with pytest.raises(ModelNotFound):
        scheduler.resolve(VLM)
    publish(hub_dir, VLM, vlm)  # written back by another program
    assert scheduler.resolve(VLM).id == VLM


@pytest.mark.parametrize("model", ["../x", "/etc/passwd", "a/b/c", "org/..", "x"])
async def test_path_like_ids_are_invalid_argument(stub, hub_dir, model):
    error = await rpc_error(stub.DeleteCache(pb.DeleteCacheRequest(model=model)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cached(hub_dir) == {PPOCR, OTHER}


@pytest.mark.parametrize(("model", "revision"), [("ocrd-test/absent", ""), (OTHER, "0" * 40)])
async def test_unknown_repo_or_revision_is_not_found(stub, model, revision):
    error = await rpc_error(stub.DeleteCache(pb.DeleteCacheRequest(model=model, revision=revision)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- ocrctl ---------------------------------------------------------------------------------------


async def test_ocrctl_cache_ls_prints_a_table_with_totals(ocrctl, stub, hub_dir):
    await load_ppocr(stub)
    result = await ocrctl("cache", "ls")
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["REPO", "REVISIONS", "SIZE", "LAST", "USED", "LOADED", "BY", "IN", "CATALOG"]
    ppocr = next(line for line in lines if line.startswith(PPOCR))
    assert "builtin" in ppocr and ppocr.endswith("yes")
    other = next(line for line in lines if line.startswith(OTHER))
    assert "(main)" in other and other.endswith("no")
    assert lines[-1].startswith("2 repos, ") and lines[-1].endswith(f"in {hub_dir}")


async def test_ocrctl_cache_ls_json(ocrctl):
    result = await ocrctl("cache", "ls", "--json")
    assert result.rc == 0
    assert {repo["repo_id"] for repo in json.loads(result.out)["repos"]} == {PPOCR, OTHER}


async def test_ocrctl_cache_rm_dry_run_lists_paths_and_keeps_them(ocrctl, hub_dir):
    result = await ocrctl("cache", "rm", OTHER, "--dry-run")
    assert result.rc == 0 and result.out.startswith("would free ")
    assert str(repo_folder(hub_dir, OTHER)) in result.out
    assert OTHER in cached(hub_dir)


async def test_ocrctl_cache_rm_without_yes_refuses_when_stdin_is_not_a_terminal(ocrctl, hub_dir, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    result = await ocrctl("cache", "rm", OTHER)
    assert result.rc == 1 and result.out == ""
    assert "pass --yes" in result.err and result.err.count("\n") == 1
    assert OTHER in cached(hub_dir)


async def test_ocrctl_cache_rm_yes_deletes_and_prints_bytes_freed(ocrctl, hub_dir):
    result = await ocrctl("cache", "rm", OTHER, "--yes")
    assert result.rc == 0 and result.out.startswith(f"deleted {OTHER}: freed ")
    assert "bytes)" in result.out
    assert cached(hub_dir) == {PPOCR}


async def test_ocrctl_cache_rm_of_a_loaded_model_says_to_unload_or_force(ocrctl, stub, hub_dir):
    await load_ppocr(stub)
    result = await ocrctl("cache", "rm", "ppocr", "--yes")
    assert result.rc == 1 and "--force" in result.err and result.err.count("\n") == 1
    result = await ocrctl("cache", "rm", "ppocr", "--yes", "--force")
    assert result.rc == 0 and PPOCR not in cached(hub_dir)


# --- VerifyCache and ocrctl cache verify -----------------------------------------------------------


def cut_weights(hub_dir: Path, repo_id: str, commit: str) -> int:
    """Cuts the weights blob of a snapshot to half, like an interrupted download; its new size."""
    blob = (repo_folder(hub_dir, repo_id) / "snapshots" / commit / "model.safetensors").resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    return len(data) // 2


async def test_verify_cache_of_a_whole_model_is_ok(stub, hub_dir):
    commit = publish(hub_dir, WHOLE, WHOLE_FILES)
    result = await stub.VerifyCache(pb.VerifyCacheRequest(model=WHOLE))
    assert result.ok and result.repo_id == WHOLE
    assert [(rev.commit, list(rev.refs), rev.files_checked, len(rev.problems)) for rev in result.revisions] == [
        (commit, ["main"], 2, 0)]


async def test_verify_cache_names_each_broken_file(stub, hub_dir):
    commit = publish(hub_dir, WHOLE, WHOLE_FILES)
    cut_weights(hub_dir, WHOLE, commit)
    partial = repo_folder(hub_dir, WHOLE) / "blobs" / ("c" * 64 + ".incomplete")
    partial.write_bytes(b"\0")
    result = await stub.VerifyCache(pb.VerifyCacheRequest(model=WHOLE, revision="main"))
    assert not result.ok
    (rev,) = result.revisions
    found = {problem.file: problem.problem for problem in rev.problems}
    assert set(found) == {"model.safetensors", f"blobs/{partial.name}"}
    assert found["model.safetensors"].startswith("truncated: ")
    assert found[f"blobs/{partial.name}"].startswith("partial download")


@pytest.mark.parametrize(("model", "revision", "code"), [
    ("ocrd-test/absent", "", grpc.StatusCode.NOT_FOUND),
    (OTHER, "0" * 40, grpc.StatusCode.NOT_FOUND),
    ("../x", "", grpc.StatusCode.INVALID_ARGUMENT),
])
async def test_verify_cache_of_what_is_not_cached_or_no_repo_id(stub, model, revision, code):
    error = await rpc_error(stub.VerifyCache(pb.VerifyCacheRequest(model=model, revision=revision)))
    assert error.code() == code and "\n" not in error.details()


async def test_ocrctl_cache_verify_of_a_whole_model_prints_ok(ocrctl, hub_dir):
    commit = publish(hub_dir, WHOLE, WHOLE_FILES)
    result = await ocrctl("cache", "verify", WHOLE)
    assert result.rc == 0, result.err
    assert result.out.splitlines() == [WHOLE, f"  {commit[:12]} (main): 2 files, ok"]


async def test_ocrctl_cache_verify_reports_problems_and_exits_1_saying_what_to_do(ocrctl, hub_dir):
    commit = publish(hub_dir, WHOLE, WHOLE_FILES)
    size = cut_weights(hub_dir, WHOLE, commit)
    result = await ocrctl("cache", "verify", WHOLE)
    assert result.rc == 1
    lines = result.out.splitlines()
    assert lines[:2] == [WHOLE, f"  {commit[:12]} (main): 2 files, 1 problem"]
    assert lines[2].startswith(f"    model.safetensors: truncated: {size:,} of the ")
    assert result.err == (f"ocrctl: {WHOLE} is damaged in the cache: remove it with 'ocrctl cache rm "
                          f"{WHOLE}', then fetch it again with 'ocrctl pull {WHOLE}'\n")


async def test_ocrctl_cache_verify_json(ocrctl, hub_dir):
    commit = publish(hub_dir, WHOLE, WHOLE_FILES)
    ok = await ocrctl("cache", "verify", WHOLE, "--json")
    assert ok.rc == 0 and json.loads(ok.out)["ok"] is True
    cut_weights(hub_dir, WHOLE, commit)
    broken = await ocrctl("cache", "verify", WHOLE, "--json")
    assert broken.rc == 1
    answer = json.loads(broken.out)
    assert answer["ok"] is False
    assert answer["revisions"][0]["problems"][0]["file"] == "model.safetensors"

