"""``ocrd.cache.verify.verify_cached`` on real cache layouts: a real tiny LLaVA (as transformers
saved it) and a sharded repo, each test damaging its own copy the way downloads and disks do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from ocrd.cache.verify import verify_cached
from tests.support.fake_hub import tiny_safetensors
from tests.support.tiny_models import build_tiny_model, publish_snapshot, repo_folder

REPO = "ocrd-test/tiny-llava"
SHARDED = "ocrd-test/sharded"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    """REPO with two revisions (seed 1 on main) and SHARDED (two shards and their index)."""
    hub_dir = tmp_path_factory.mktemp("verify") / "hub"
    old = build_tiny_model("llava", hub_dir, REPO, seed=0)
    new = build_tiny_model("llava", hub_dir, REPO, seed=1)
    src = hub_dir.parent / "sharded-src"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llava"}')
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": SHARDS[0], "b": SHARDS[1]}}))
    for size, shard in zip((100, 200), SHARDS, strict=True):
        (src / shard).write_bytes(tiny_safetensors(size, b"\1"))
    sharded, _ = publish_snapshot(src, hub_dir, SHARDED)
    return hub_dir, old, new, sharded


@pytest.fixture
def hub(template, tmp_path: Path):
    source, old, new, sharded = template
    hub_dir = tmp_path / "hub"
    shutil.copytree(source, hub_dir, symlinks=True)
    return hub_dir, old.revision, new.revision, sharded


def snapshot(hub_dir: Path, repo_id: str, commit: str) -> Path:
    return repo_folder(hub_dir, repo_id) / "snapshots" / commit


def blob_of(hub_dir: Path, repo_id: str, commit: str, name: str) -> Path:
    return (snapshot(hub_dir, repo_id, commit) / name).resolve()


def problems(hub_dir: Path, repo_id: str, revision: str | None = None) -> dict[str, str]:
    verification = verify_cached(hub_dir, repo_id, revision)
    return {p.file: p.problem for rev in verification.revisions for p in rev.problems}


def test_whole_revisions_are_ok_and_every_file_is_checked(hub):
    hub_dir, old, new, _ = hub
    verification = verify_cached(hub_dir, REPO)
    assert verification.ok and verification.repo_id == REPO
    checked = {rev.commit: (rev.refs, rev.files_checked) for rev in verification.revisions}
    files = len([p for p in snapshot(hub_dir, REPO, new).iterdir()])
    assert checked == {new: (("main",), files), old: ((), files)}
    assert verify_cached(hub_dir, SHARDED).ok


def test_only_the_revision_asked_for_is_checked(hub):
    hub_dir, old, new, _ = hub
    assert [rev.commit for rev in verify_cached(hub_dir, REPO, "main").revisions] == [new]
    assert [rev.commit for rev in verify_cached(hub_dir, REPO, old).revisions] == [old]
    with pytest.raises(LookupError, match="no cached revision 'v9'"):
        verify_cached(hub_dir, REPO, "v9")


def test_unknown_repo_or_missing_cache_is_a_lookup_error(hub, tmp_path):
    hub_dir, *_ = hub
    with pytest.raises(LookupError, match="not in the Hugging Face cache"):
        verify_cached(hub_dir, "ocrd-test/absent")
    with pytest.raises(LookupError, match="no Hugging Face cache"):
        verify_cached(tmp_path / "nowhere", REPO)


def test_a_truncated_safetensors_blob_is_reported(hub):
    hub_dir, _, new, _ = hub
    blob = blob_of(hub_dir, REPO, new, "model.safetensors")
    size = blob.stat().st_size
    with blob.open("r+b") as stream:
        stream.truncate(size - 1000)
    found = problems(hub_dir, REPO, "main")
    assert found == {"model.safetensors": f"truncated: {size - 1000:,} of the {size:,} bytes its header "
                                          "describes (a cut-off download?)"}


def test_a_safetensors_blob_longer_than_its_header_is_reported(hub):
    hub_dir, _, new, _ = hub
    with blob_of(hub_dir, REPO, new, "model.safetensors").open("ab") as stream:
        stream.write(b"\0" * 10)
    assert problems(hub_dir, REPO, "main")["model.safetensors"].startswith("10 bytes longer than")


def test_a_file_that_is_no_safetensors_is_reported(hub):
    hub_dir, _, new, _ = hub
    blob_of(hub_dir, REPO, new, "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0" + b"not json at all!")
    assert problems(hub_dir, REPO, "main") == {
        "model.safetensors": "not a safetensors file: its header does not parse"}


def test_a_shard_missing_from_the_snapshot_is_reported(hub):
    hub_dir, _, _, sharded = hub
    (snapshot(hub_dir, SHARDED, sharded) / SHARDS[1]).unlink()
    assert problems(hub_dir, SHARDED) == {SHARDS[1]: "missing: model.safetensors.index.json lists this shard"}


def test_a_link_whose_blob_is_gone_is_reported_by_name(hub):
    hub_dir, _, _, sharded = hub
    blob = blob_of(hub_dir, SHARDED, sharded, SHARDS[0])
    blob.unlink()
    # huggingface_hub's scan rejects the whole repo for it, without naming the file.
    assert SHARDED not in {repo.repo_id for repo in scan_cache_dir(hub_dir).repos}
    assert problems(hub_dir, SHARDED) == {
        SHARDS[0]: f"missing: its link points to blobs/{blob.name}, which is not in the cache"}


def test_a_partial_download_among_the_blobs_is_reported(hub):
    hub_dir, *_ = hub
    partial = repo_folder(hub_dir, SHARDED) / "blobs" / ("ab" * 32 + ".1a2b3c4d.incomplete")
    partial.write_bytes(b"\0" * 10)
    found = problems(hub_dir, SHARDED)
    assert list(found) == [f"blobs/{partial.name}"]
    assert found[f"blobs/{partial.name}"].startswith("partial download")


def test_a_config_that_does_not_parse_is_reported(hub):
    hub_dir, _, _, sharded = hub
    blob_of(hub_dir, SHARDED, sharded, "config.json").write_text('{"model_type": ')
    assert problems(hub_dir, SHARDED)["config.json"].startswith("not valid JSON")


def test_a_snapshot_without_weights_or_config_is_reported(hub):
    hub_dir, _, _, sharded = hub
    for name in ("config.json", "model.safetensors.index.json", *SHARDS):
        (snapshot(hub_dir, SHARDED, sharded) / name).unlink()
    (snapshot(hub_dir, SHARDED, sharded) / "README.md").write_text("no weights here")
    assert problems(hub_dir, SHARDED) == {
        "config.json": "missing: every loader reads it",
        "model weights": "missing: no *.safetensors (or *.bin) file",
    }


def test_a_ref_to_a_commit_with_no_files_is_reported(hub):
    hub_dir, *_ = hub
    (repo_folder(hub_dir, SHARDED) / "refs" / "v2").write_text("f" * 40)
    verification = verify_cached(hub_dir, SHARDED)
    assert not verification.ok
    broken = {rev.commit: rev for rev in verification.revisions}["f" * 40]
    assert broken.refs == ("v2",) and broken.files_checked == 0
    assert [(p.file, p.problem) for p in broken.problems] == [
        (f"snapshots/{'f' * 40}", "missing: refs/v2 points to this commit but none of its files was downloaded")]
