"""OpenAI's Files API on a real ``ocrd serve``, driven by the official ``openai`` client: upload,
retrieve, list (its pagination), download, delete, expiry, refusals in OpenAI's shape, each
route's body limit, and the files surviving a restart (and a crash mid-upload)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import openai
import pytest

from tests.support.daemon import running_daemon

MAX_FILE = 300_000
MAX_BODY = 100_000  # smaller than a file may be: uploads have their own limit


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def config(state_dir: Path) -> dict:
    return {"state_dir": state_dir, "limits": {"max_file_bytes": MAX_FILE, "max_body_bytes": MAX_BODY}}


@pytest.fixture(scope="module")
def daemon(state_dir):
    with running_daemon(config(state_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.openai_client() as openai_client:
        yield openai_client


def test_a_file_goes_up_comes_back_whole_and_goes_away(client):
    data = os.urandom(250_000)  # more than max_body_bytes: the upload's own limit applies
    created = client.files.create(file=("scan.bin", io.BytesIO(data)), purpose="user_data")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(data), "scan.bin", "user_data", "processed")
    assert abs(created.created_at - time.time()) < 60 and created.expires_at is None

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == data
    assert created.id in {f.id for f in client.files.list()}

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve(created.id)
    assert caught.value.body["message"] == f"No such File object: {created.id}"
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_expiry_follows_expires_after_and_batch_files_default_to_30_days(client):
    batch = client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600
    hour = client.files.create(file=("a.pdf", b"%PDF-1.4"), purpose="ocr",
                               expires_after={"anchor": "created_at", "seconds": 3600})
    assert hour.expires_at == hour.created_at + 3600
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.pdf", b"x"), purpose="ocr",
                            expires_after={"anchor": "created_at", "seconds": 60})
    assert caught.value.body["param"] == "expires_after.seconds"


def test_bad_uploads_are_refused_in_openais_shape(client, daemon):
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.txt", b"x"), purpose="fine-tune")
    assert caught.value.body["param"] == "purpose" and "batch" in caught.value.body["message"]

    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=("big.bin", os.urandom(MAX_FILE + 1)), purpose="user_data")
    assert too_big.value.status_code == 413
    assert "limits.max_file_bytes" in too_big.value.body["message"]

    with daemon.http() as http:
        no_file = http.post("/v1/files", data={"purpose": "batch"})
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
        as_json = http.post("/v1/files", json={"purpose": "batch"})
        assert as_json.status_code == 400
        # Elsewhere max_body_bytes still holds.
        big_chat = http.post("/v1/chat/completions", content=b"x" * (MAX_BODY + 1),
                             headers={"content-type": "application/json"})
        assert big_chat.status_code == 413 and "limits.max_body_bytes" in big_chat.json()["error"]["message"]


def test_the_list_pages_as_openais_does(client):
    made = [client.files.create(file=(f"p{n}.txt", f"{n}".encode()), purpose="user_data").id
            for n in range(5)]
    first = client.files.list(purpose="user_data", limit=2, order="asc")
    assert len(first.data) == 2 and first.has_more
    walked = [f.id for f in client.files.list(purpose="user_data", limit=2, order="asc")]  # auto-paging
    assert walked[-5:] == made
    newest = client.files.list(purpose="user_data", limit=5)  # desc by default
    assert [f.id for f in newest.data] == made[::-1]
    assert all(f.purpose == "user_data" for f in client.files.list(purpose="user_data"))


def test_files_survive_a_restart_and_a_crash_mid_upload_leaves_nothing(state_dir, daemon):
    with daemon.openai_client() as client:
        kept = client.files.create(file=("keep.bin", b"kept across restarts"), purpose="user_data")
    daemon.stop()
    folder = state_dir / "jobs" / "files"
    (folder / ".upload-file-deadbeef").write_bytes(b"half an upload")  # killed while writing
    (folder / "file-norow").write_bytes(b"written, never committed")  # killed before its row
    with running_daemon(config(state_dir)) as again, again.openai_client() as client:
        assert client.files.content(kept.id).content == b"kept across restarts"
        assert client.files.retrieve(kept.id).filename == "keep.bin"
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("file-")) == []
        assert not (folder / "file-norow").exists()
        digest = hashlib.sha256((folder / kept.id).read_bytes()).hexdigest()
        assert digest == hashlib.sha256(b"kept across restarts").hexdigest()
