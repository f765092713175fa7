"""PullModel through the real gRPC server (real Scheduler, FakeRunners) and ``ocrctl pull``, with
the real huggingface_hub downloading from FakeHub (a real HTTP server that answers like the Hub)
into a real cache; and the same through a real ``ocrd serve``.

The files served are a real tiny LLaVA (``tiny_hub``) or small synthetic repos. ocrd reads
``HF_ENDPOINT`` at each pull, so the in-process server is pointed at FakeHub with monkeypatch.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from huggingface_hub import scan_cache_dir

from ocrd.cache.inventory import find_snapshot, read_ref
from ocrd.cache.pull import Puller
from ocrd.cache.service import CacheService
from ocrd.config.settings import ModelSettings, Settings
from ocrd.control.v1 import control_pb2 as pb
from tests.support.control import settings_for
from tests.support.daemon import (
    OCRCTL,
    STOP_TIMEOUT,
    daemon_env,
    free_port,
    running_daemon,
    wait_until,
)
from tests.support.fake_hub import FakeHub, tiny_safetensors
from tests.support.tiny_models import repo_folder

REPO = "ocrd-test/pulled-llava"
SMALL = "ocrd-test/small"
WEIGHTS = "model.safetensors"
EVENT_TIMEOUT = 30.0  # hang guard


def small_repo(fill: bytes = b"\0") -> dict[str, bytes]:
    return {"config.json": b'{"model_type": "llava"}', WEIGHTS: tiny_safetensors(2048, fill),
            "tokenizer.json": b"{}"}


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub"


@pytest.fixture
def settings(socket_dir: Path, hub_dir: Path) -> Settings:
    return settings_for(socket_dir).model_copy(update={"cache": Settings().cache.model_copy(
        update={"hub_dir": hub_dir})})


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, downloads: Puller) -> Iterator[FakeHub]:
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield hub
    assert downloads.active() == [], "a download outlived its test"


@pytest.fixture
def llava(tiny_hub) -> Path:
    """The snapshot folder of a real tiny LLaVA: the files FakeHub serves."""
    return tiny_hub.models["llava"].snapshot


def files_of(snapshot: Path) -> dict[str, bytes]:
    return {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}


async def pull(stub, model: str, revision: str = "") -> list[pb.PullModelProgress]:
    return [step async for step in stub.PullModel(pb.PullModelRequest(model=model, revision=revision))]


async def pull_error(stub, model: str, revision: str = "") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pull(stub, model, revision)
    assert "\n" not in caught.value.details()
    return caught.value


async def read_rest(call) -> list[pb.PullModelProgress]:
    """The remaining steps of a stream already read from with ``read()``."""
    steps = []
    while (step := await call.read()) is not grpc.aio.EOF:
        steps.append(step)
    return steps


async def next_event(subscription, kind: str):
    while True:
        event = await asyncio.wait_for(subscription.next(), EVENT_TIMEOUT)
        if event.kind == kind:
            return event


# --- pulling --------------------------------------------------------------------------------------


async def test_pull_streams_progress_to_done_and_the_model_becomes_servable(stub, fake_hub, hub_dir, llava):
    commit = fake_hub.publish_dir(REPO, llava)
    expected = files_of(llava)
    assert REPO not in {m.id for m in (await stub.ListModels(pb.ListModelsRequest())).models}

    steps = await pull(stub, REPO)

    first, last = steps[0], steps[-1]
    assert first.model == REPO and first.commit == commit and first.message
    assert (first.files_total, first.files_done, first.downloaded_bytes) == (len(expected), 0, 0)
    assert first.total_bytes == sum(len(data) for data in expected.values())
    assert {step.file for step in steps if step.file} == set(expected)
    assert all(step.downloaded_bytes <= step.total_bytes for step in steps)
    assert [step.done for step in steps] == [False] * (len(steps) - 1) + [True]
    assert (last.files_done, last.files_total) == (len(expected), len(expected))
    assert last.downloaded_bytes == last.total_bytes == first.total_bytes

    snapshot = find_snapshot(hub_dir, REPO)
    assert snapshot is not None and snapshot.complete and snapshot.commit == commit
    assert str(snapshot.path) in last.message
    assert files_of(snapshot.path) == expected  # byte for byte
    listed = {m.id: m for m in (await stub.ListModels(pb.ListModelsRequest())).models}
    assert listed[REPO].engine == "transformers"


async def test_pull_publishes_started_and_pulled_events(stub, fake_hub, scheduler):
    commit = fake_hub.publish(SMALL, small_repo())
    events = scheduler.events.subscribe(SMALL)
    await pull(stub, SMALL)
    assert (await next_event(events, "cache.pull_started")).model == SMALL
    pulled = await next_event(events, "cache.pulled")
    assert pulled.model == SMALL and commit in pulled.message


async def test_pull_of_a_revision_takes_that_commit_and_moves_only_its_ref(stub, fake_hub, hub_dir):
    old = fake_hub.publish(SMALL, small_repo(b"\1"), branch="v1")
    new = fake_hub.publish(SMALL, small_repo(b"\2"))
    assert old != new

    steps = await pull(stub, SMALL, "v1")

    assert steps[-1].done and steps[-1].commit == old
    assert read_ref(hub_dir, SMALL, "v1") == old and read_ref(hub_dir, SMALL, "main") is None
    snapshot = find_snapshot(hub_dir, SMALL, "v1")
    assert snapshot is not None and snapshot.commit == old and snapshot.complete


async def test_pull_by_alias_takes_the_catalogs_pinned_revision(stub, fake_hub, hub_dir):
    # moondream2's catalog entry pins the dated revision its model card names.
    pinned = fake_hub.publish("vikhyatk/moondream2", small_repo(b"\1"), branch="2025-06-21")
    fake_hub.publish("vikhyatk/moondream2", small_repo(b"\2"))

    steps = await pull(stub, "moondream2")

    assert steps[-1].model == "vikhyatk/moondream2" and steps[-1].commit == pinned
    assert read_ref(hub_dir, "vikhyatk/moondream2", "2025-06-21") == pinned


def test_the_revision_pulled_by_default_is_the_configs_else_the_catalogs_pin(scheduler, settings):
    service = CacheService(scheduler, Puller())
    assert service.pinned_revision("vikhyatk/moondream2") == "2025-06-21"  # [transformers] revision
    # granite-docling pins "untied" for vLLM only; this host runs it on transformers: main.
    assert service.pinned_revision("ibm-granite/granite-docling-258M") is None
    assert service.pinned_revision(SMALL) is None
    scheduler.directory.apply_settings(settings.model_copy(update={"models": {
        SMALL: ModelSettings(revision="v2"), "moondream2": ModelSettings(revision="2024-08-26")}}))
    assert service.pinned_revision(SMALL) == "v2"
    assert service.pinned_revision("vikhyatk/moondream2") == "2024-08-26"  # by alias


async def test_pull_of_what_is_cached_downloads_nothing_again(stub, fake_hub):
    fake_hub.publish(SMALL, small_repo())
    await pull(stub, SMALL)
    steps = await pull(stub, SMALL)
    assert steps[0].files_done == steps[0].files_total == 3 and "already in the cache" in steps[0].message
    assert steps[-1].done
    assert fake_hub.gets(WEIGHTS) == 1


async def test_verify_after_a_pull_knows_every_file_the_hub_listed(stub, fake_hub, hub_dir):
    commit = fake_hub.publish(SMALL, {**small_repo(), "README.md": b"# docs"})
    await pull(stub, SMALL)
    assert (await stub.VerifyCache(pb.VerifyCacheRequest(model=SMALL))).ok
    # A file gone from the snapshot, its link and all: only the Hub's listing knows it was there.
    (repo_folder(hub_dir, SMALL) / "snapshots" / commit / "tokenizer.json").unlink()
    (repo_folder(hub_dir, SMALL) / "snapshots" / commit / "README.md").unlink()  # no loader reads it
    result = await stub.VerifyCache(pb.VerifyCacheRequest(model=SMALL))
    assert not result.ok
    assert [(p.file, p.problem) for p in result.revisions[0].problems] == [
        ("tokenizer.json", "missing: the Hub lists it for this commit, but it was not downloaded")]


# --- failures: one line each, and the cache as it was ----------------------------------------------


@pytest.mark.parametrize(("model", "says"), [
    ("ppocr", "builtin/ppocr is built into ocrd (builtin engine): there is nothing to download"),
    ("../etc", "is not a valid model name"),
    ("nosuchmodel", "is neither a model ocrd knows nor a Hugging Face repo id"),
])
async def test_pull_of_a_builtin_model_or_no_repo_id_is_invalid(stub, fake_hub, model, says):
    error = await pull_error(stub, model)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and says in error.details()
    assert fake_hub.requests == []


async def test_unknown_repo_is_not_found(stub, fake_hub):
    error = await pull_error(stub, "ocrd-test/absent")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "does not exist on the Hub" in error.details() and fake_hub.url in error.details()


async def test_unknown_revision_is_not_found(stub, fake_hub):
    fake_hub.publish(SMALL, small_repo())
    error = await pull_error(stub, SMALL, "no-such-branch")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no revision 'no-such-branch'" in error.details()


async def test_unreachable_hub_is_unavailable(stub, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    error = await pull_error(stub, SMALL)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert f"cannot reach the Hugging Face Hub at {endpoint}" in error.details()


@pytest.mark.parametrize("token", [None, "hf_not_the_right_one"])
async def test_gated_repo_without_access_says_accept_the_licence_and_set_hf_token(
        stub, fake_hub, hub_dir, monkeypatch, token):
    fake_hub.publish(SMALL, small_repo())
    fake_hub.gate(SMALL, "hf_granted")
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    error = await pull_error(stub, SMALL)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "accept its licence" in error.details() and "HF_TOKEN" in error.details()
    assert not repo_folder(hub_dir, SMALL).exists()


async def test_gated_repo_downloads_with_the_granted_token(stub, fake_hub, hub_dir, monkeypatch):
    fake_hub.publish(SMALL, small_repo())
    fake_hub.gate(SMALL, "hf_granted")
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert (await pull(stub, SMALL))[-1].done
    assert find_snapshot(hub_dir, SMALL).complete


async def test_a_failed_pull_of_a_new_model_leaves_nothing_behind(stub, fake_hub, hub_dir):
    fake_hub.publish(SMALL, small_repo())
    fake_hub.fail(WEIGHTS, 500)
    error = await pull_error(stub, SMALL)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "HTTP 500" in error.details()
    assert find_snapshot(hub_dir, SMALL) is None
    assert not repo_folder(hub_dir, SMALL).exists()


async def test_a_failed_pull_of_a_new_commit_keeps_the_old_one_served(stub, fake_hub, hub_dir):
    old = fake_hub.publish(SMALL, small_repo(b"\1"))
    await pull(stub, SMALL)
    new = fake_hub.publish(SMALL, small_repo(b"\2"))  # new weights; config and tokenizer unchanged
    fake_hub.fail(WEIGHTS, 503)

    error = await pull_error(stub, SMALL)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    snapshot = find_snapshot(hub_dir, SMALL)
    assert snapshot is not None and snapshot.commit == old and snapshot.complete
    (repo,) = scan_cache_dir(hub_dir).repos
    assert {rev.commit_hash: set(rev.refs) for rev in repo.revisions} == {old: {"main"}}
    assert new not in {rev.commit_hash for rev in repo.revisions}


# --- one download per repository -----------------------------------------------------------------


async def test_two_pulls_of_one_repo_share_one_download(stub, fake_hub, hub_dir):
    commit = fake_hub.publish(SMALL, small_repo())
    hold = fake_hub.hold(WEIGHTS)
    first = stub.PullModel(pb.PullModelRequest(model=SMALL))
    assert (await first.read()).commit == commit
    assert await asyncio.to_thread(hold.reached.wait, EVENT_TIMEOUT)
    second = stub.PullModel(pb.PullModelRequest(model=SMALL))
    assert (await second.read()).commit == commit  # joined: it knows the commit being fetched

    hold.release()
    firsts, seconds = await read_rest(first), await read_rest(second)

    assert firsts[-1].done and seconds[-1].done
    assert fake_hub.gets(WEIGHTS) == 1
    assert find_snapshot(hub_dir, SMALL).complete


async def test_a_pull_nobody_follows_any_more_is_stopped_and_leaves_nothing(stub, fake_hub, hub_dir, scheduler,
                                                                           downloads):
    fake_hub.publish(SMALL, small_repo())
    hold = fake_hub.hold(WEIGHTS)
    events = scheduler.events.subscribe(SMALL)
    call = stub.PullModel(pb.PullModelRequest(model=SMALL))
    await call.read()
    assert await asyncio.to_thread(hold.reached.wait, EVENT_TIMEOUT)

    call.cancel()  # like Ctrl-C on ocrctl pull
    await next_event(events, "cache.pull_stopping")
    hold.release()  # the rest of the file arrives: the download must not complete it
    failed = await next_event(events, "cache.pull_failed")

    assert "stopped before it finished" in failed.message
    assert downloads.active() == []
    assert not repo_folder(hub_dir, SMALL).exists()
    assert fake_hub.gets(WEIGHTS) == 1  # not retried
    # And nothing blocks the next pull.
    assert (await pull(stub, SMALL))[-1].done
    assert find_snapshot(hub_dir, SMALL).complete


# --- ocrctl pull -----------------------------------------------------------------------------------


async def test_ocrctl_pull_shows_progress_and_ends_with_a_summary(ocrctl, fake_hub, hub_dir):
    commit = fake_hub.publish(SMALL, small_repo())
    result = await ocrctl("pull", SMALL)
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"{SMALL}: main is commit {commit}: 3 files, {sum(map(len, small_repo().values())):,} bytes"
    assert any(line.startswith(f"{SMALL}: {WEIGHTS} (") and " done, " in line for line in lines[1:-1])
    assert lines[-1].startswith(f"pulled {SMALL} (commit {commit[:12]}): 3 files, ")
    assert lines[-1].endswith(f"in the cache at {hub_dir / 'models--ocrd-test--small' / 'snapshots' / commit}")
    assert "\r" not in result.out


async def test_ocrctl_pull_json_prints_one_object_per_step(ocrctl, fake_hub):
    commit = fake_hub.publish(SMALL, small_repo())
    result = await ocrctl("pull", SMALL, "--json")
    assert result.rc == 0, result.err
    steps = [json.loads(line) for line in result.out.splitlines()]
    assert steps[0]["commit"] == commit and steps[-1]["done"] is True
    assert steps[-1]["files_done"] == steps[-1]["files_total"] == 3


async def test_ocrctl_pull_of_an_unknown_repo_says_so_in_one_line(ocrctl, fake_hub):
    result = await ocrctl("pull", "ocrd-test/absent")
    assert result.rc == 1 and result.out == ""
    assert result.err.startswith("ocrctl: ocrd-test/absent does not exist on the Hub")
    assert result.err.count("\n") == 1


# --- a real ocrd serve ------------------------------------------------------------------------------


def test_ocrd_serve_pulls_from_its_hf_endpoint_and_then_serves_the_model(tmp_path, llava):
    hub_dir = tmp_path / "hub"
    with FakeHub() as hub:
        commit = hub.publish_dir(REPO, llava)
        with running_daemon({"cache": {"hub_dir": hub_dir}}, env={"HF_ENDPOINT": hub.url}) as daemon:
            result = daemon.ocrctl("pull", REPO)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines()[-1].startswith(f"pulled {REPO} (commit {commit[:12]})")
            models = daemon.ocrctl("models", "--json")
            assert REPO in {m["id"] for m in json.loads(models.stdout)["models"]}
            verify = daemon.ocrctl("cache", "verify", REPO)
            assert verify.returncode == 0, verify.stdout + verify.stderr


def test_ocrd_serve_offline_refuses_to_pull_in_one_line(tmp_path):
    with running_daemon({"cache": {"hub_dir": tmp_path / "hub"}}, env={"HF_HUB_OFFLINE": "1"}) as daemon:
        result = daemon.ocrctl("pull", SMALL)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"ocrctl: ocrd runs with HF_HUB_OFFLINE=1, so it cannot download {SMALL}")
    assert result.stderr.count("\n") == 1


def test_ocrd_stopping_during_a_pull_stops_it_and_leaves_nothing_half_done(tmp_path):
    hub_dir = tmp_path / "hub"
    with FakeHub() as hub:
        hub.publish(SMALL, small_repo())
        hold = hub.hold(WEIGHTS)
        with running_daemon({"cache": {"hub_dir": hub_dir}}, env={"HF_ENDPOINT": hub.url}) as daemon:
            client = subprocess.Popen([OCRCTL, "--address", str(daemon.socket_path), "pull", SMALL],
                                      env=daemon_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True)
            try:
                assert hold.reached.wait(EVENT_TIMEOUT)
                daemon.send_signal(signal.SIGTERM)
                wait_until(lambda: f"stopping the download of {SMALL}" in daemon.stderr(), timeout=EVENT_TIMEOUT,
                           message="ocrd stops the download")
                hold.release()  # the rest of the file arrives: the stopped download must drop it
                assert daemon.process.wait(timeout=STOP_TIMEOUT) == 0  # on the one SIGTERM
            finally:
                client.kill()
                client.communicate()
    assert find_snapshot(hub_dir, SMALL) is None
    assert not repo_folder(hub_dir, SMALL).exists()

