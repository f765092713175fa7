"""What the model directory reads of the Hugging Face cache is kept between requests
(``ocrd.cache.snapshot_index``) and never outlives the cache: changes made by another program are
seen at the next look, ocrd's own changes drop everything, and a cache changed within the last
moments is read afresh. Real cache layouts in tmp_path; the index settles in 50 ms here (2 s in
ocrd), so that a test waits that long where answers are to be kept."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from ocrd.cache.snapshot_index import SnapshotIndex
from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.errors import ModelNotFound
from tests.support.cache_layout import REV, cache_model

MODEL = "someone/tiny-vlm"
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
             "vision_config": {"depth": 2}}
NEW_REV = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    return path


# What "settled" means here: long past a file system's timestamp tick, short for a test.
SETTLED_NS = 50_000_000


def settling_index() -> SnapshotIndex:
    return SnapshotIndex(settled_ns=SETTLED_NS)


def directory(hub: Path, snapshots: SnapshotIndex | None = None) -> ModelDirectory:
    return ModelDirectory(Catalog.load_default(), Settings(cache={"hub_dir": hub}), docker_status=lambda: None,
                          snapshots=snapshots or settling_index())


def settle() -> None:
    """What is in the cache now is settled: older than SETTLED_NS (mtime and ctime alike)."""
    time.sleep(2 * SETTLED_NS / 1e9)


def not_downloaded(models: ModelDirectory, name: str) -> ModelNotFound:
    with pytest.raises(ModelNotFound) as caught:
        models.resolve(name)
    return caught.value


def linked_snapshot(hub: Path, repo_id: str, commit: str, *, blob: bytes | None) -> Path:
    """A snapshot as huggingface_hub writes it: files are links into blobs/, the weights' blob
    written only when ``blob`` is given (else the link dangles, as while downloading)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "blobs" / f"config-{commit}").write_text('{"model_type": "qwen2_vl", '
                                                     '"architectures": ["Qwen2VLForConditionalGeneration"]}')
    (snapshot / "config.json").symlink_to(f"../../blobs/config-{commit}")
    (snapshot / "model.safetensors").symlink_to(f"../../blobs/weights-{commit}")
    if blob is not None:
        (repo / "blobs" / f"weights-{commit}").write_bytes(blob)
    (repo / "refs").mkdir(exist_ok=True)
    return repo


def test_an_unchanged_cache_is_read_once(hub):
    snapshot = cache_model(hub, MODEL, QWEN_LIKE)
    settle()
    index = settling_index()
    answers = [index.find(hub, MODEL) for _ in range(3)]
    assert answers[0] is not None and answers[0].path == snapshot and answers[0].complete
    assert answers == [answers[0]] * 3
    assert index.reads == 1


def test_a_cache_changed_moments_ago_is_read_at_every_look(hub):
    cache_model(hub, MODEL, QWEN_LIKE)
    index = SnapshotIndex()  # ocrd's: settled after 2 s, which no stall of this test outlasts
    assert index.find(hub, MODEL) is not None and index.find(hub, MODEL) is not None
    assert index.reads == 2  # a change within the same timestamp tick would not show in a stat


def test_a_model_written_into_the_cache_from_outside_is_served_at_the_next_request(hub):
    models = directory(hub)
    assert not_downloaded(models, MODEL).code == "model_not_found"
    settle()
    assert not_downloaded(models, MODEL).code == "model_not_found"  # kept: an absent repo
    cache_model(hub, MODEL, QWEN_LIKE)  # `hf download`, say
    assert models.resolve(MODEL).id == MODEL


def test_a_model_deleted_from_outside_is_gone_at_the_next_request(hub):
    cache_model(hub, MODEL, QWEN_LIKE)
    models = directory(hub)
    settle()
    assert models.resolve(MODEL).id == MODEL
    shutil.rmtree(hub / ("models--" + MODEL.replace("/", "--")))
    assert not_downloaded(models, MODEL).code == "model_not_found"


def test_a_download_finishing_from_outside_completes_the_snapshot(hub):
    repo = linked_snapshot(hub, MODEL, REV, blob=None)
    (repo / "refs" / "main").write_text(REV)
    index = settling_index()
    settle()
    assert index.find(hub, MODEL).missing == ("model.safetensors",)
    (repo / "blobs" / f"weights-{REV}").write_bytes(b"weights")  # the blob the link waits for
    assert index.find(hub, MODEL).complete


def test_a_ref_moved_from_outside_gives_the_new_commit(hub):
    repo = linked_snapshot(hub, MODEL, REV, blob=b"old")
    linked_snapshot(hub, MODEL, NEW_REV, blob=b"new")
    (repo / "refs" / "main").write_text(REV)
    index = settling_index()
    settle()
    assert index.find(hub, MODEL).commit == REV
    with open(repo / "refs" / "main", "w") as ref:  # in place, as huggingface_hub writes a ref
        ref.write(NEW_REV)
    assert index.find(hub, MODEL).commit == NEW_REV
    assert index.find(hub, MODEL, REV).commit == REV  # a commit asked for by name stays


def test_ocrds_own_change_to_the_cache_drops_what_was_read(hub):
    cache_model(hub, MODEL, QWEN_LIKE)
    snapshots = settling_index()
    models = directory(hub, snapshots)
    settle()
    models.resolve(MODEL)
    reads = snapshots.reads
    models.resolve(MODEL)
    assert snapshots.reads == reads  # kept
    models.cache_changed()  # what a pull, a deletion or a load does
    assert models.resolve(MODEL).id == MODEL
    assert snapshots.reads == reads + 1
