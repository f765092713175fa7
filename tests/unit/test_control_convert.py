"""The scheduler's snapshots and events as control-plane messages (ocrd.control.convert)."""

from __future__ import annotations

import pytest

from ocrd.catalog import CatalogEntry
from ocrd.control import convert
from ocrd.control.v1 import control_pb2 as pb
from ocrd.core.known_models import Download, EngineChoice, KnownModel
from ocrd.core.scheduler import SlotInfo, UnloadResult
from ocrd.events import Event, ModelState


def slot(**changes) -> SlotInfo:
    fields = dict(
        id="builtin/ppocr", aliases=("ppocr",), description="PP-OCR", engine="builtin",
        state=ModelState.READY, device="cpu", pid=1234, memory_bytes=150 * 2**20, pinned=False,
        keep_alive=300.0, in_flight=2, queued=3, queue_capacity=16, last_used=1_700_000_000.25,
        loaded_at=1_699_999_000.5, error="", license="apache-2.0",
    )
    fields.update(changes)
    return SlotInfo(**fields)


def test_every_model_state_maps_to_its_proto_value_and_back():
    for state in ModelState:
        value = convert.state_to_pb(state)
        assert pb.ModelState.Name(value) == f"MODEL_STATE_{state.name}"
        assert convert.state_from_pb(value) is state
    assert convert.state_to_pb(None) == pb.MODEL_STATE_UNSPECIFIED
    assert convert.state_from_pb(pb.MODEL_STATE_UNSPECIFIED) is None
    assert convert.state_from_pb(99) is None  # a value a newer proto may add


def test_model_info_carries_every_field():
    info = convert.model_info(slot())
    assert (info.id, list(info.aliases), info.description, info.engine) == (
        "builtin/ppocr", ["ppocr"], "PP-OCR", "builtin"
    )
    assert (info.state, info.device, info.pid, info.memory_bytes) == (
        pb.MODEL_STATE_READY, "cpu", 1234, 150 * 2**20
    )
    assert (info.pinned, info.keep_alive_seconds) == (False, 300.0)
    assert (info.in_flight, info.queued, info.queue_capacity) == (2, 3, 16)
    assert info.last_used.ToNanoseconds() == 1_700_000_000_250_000_000
    assert info.loaded_at.ToNanoseconds() == 1_699_999_000_500_000_000
    assert (info.license, info.license_note) == ("apache-2.0", "")


def test_a_restrictive_licence_travels_with_its_note_and_an_unknown_one_is_empty():
    info = convert.model_info(slot(license="OpenRAIL-M (modified)", license_note="commercial use restricted"))
    assert (info.license, info.license_note) == ("OpenRAIL-M (modified)", "commercial use restricted")
    assert convert.model_info(slot(license=None)).license == ""


def test_a_model_that_is_not_running_has_no_pid_no_times_and_keeps_its_error():
    info = convert.model_info(
        slot(state=ModelState.FAILED, pid=None, device="", memory_bytes=0, last_used=None,
             loaded_at=None, error="runner exited: killed")
    )
    assert (info.state, info.pid, info.memory_bytes) == (pb.MODEL_STATE_FAILED, 0, 0)
    assert not info.HasField("last_used") and not info.HasField("loaded_at")
    assert info.error == "runner exited: killed"


def test_a_known_model_without_a_slot_carries_the_catalogs_facts_and_its_download_state():
    entry = CatalogEntry(id="org/vlm", aliases=("vlm",), description="a VLM", engines=("vllm", "transformers"),
                         license="mit")
    known = KnownModel(entry=entry, engine="transformers", size_bytes=2_000_000_000,
                       engines=(EngineChoice("vllm", False, "no Docker"), EngineChoice("transformers", True)),
                       download=Download.PARTIAL, unavailable="not downloaded: `ocrctl pull org/vlm`")
    info = convert.known_model(known, None)
    assert (info.id, list(info.aliases), info.description, info.license) == ("org/vlm", ["vlm"], "a VLM", "mit")
    assert (info.engine, info.state, info.pid) == ("transformers", pb.MODEL_STATE_NOT_LOADED, 0)
    assert (info.size_bytes, info.download) == (2_000_000_000, pb.DOWNLOAD_STATE_PARTIAL)
    assert [(e.name, e.available, e.reason) for e in info.engines] == [
        ("vllm", False, "no Docker"), ("transformers", True, "")]
    assert info.unavailable_reason == "not downloaded: `ocrctl pull org/vlm`"


def test_a_known_model_with_a_slot_keeps_what_the_scheduler_says_of_it():
    entry = CatalogEntry(id="builtin/ppocr", engines=("builtin",))
    known = KnownModel(entry=entry, engine="builtin", engines=(EngineChoice("builtin", True),),
                       download=Download.NOT_NEEDED, size_bytes=None)
    info = convert.known_model(known, slot())
    assert (info.state, info.pid, info.memory_bytes) == (pb.MODEL_STATE_READY, 1234, 150 * 2**20)
    assert (info.size_bytes, info.download, info.unavailable_reason) == (0, pb.DOWNLOAD_STATE_NOT_NEEDED, "")


def test_a_pinned_model_reports_keep_alive_zero():
    assert convert.model_info(slot(pinned=True, keep_alive=300.0)).keep_alive_seconds == 0.0


def test_event_conversion():
    event = convert.event(
        Event(kind="model.progress", model="builtin/ppocr", state=ModelState.LOADING,
              message="loading the detector", progress=0.5, stage="loading detector",
              sequence=7, time=1_700_000_000.125)
    )
    assert (event.sequence, event.kind, event.model, event.state) == (
        7, "model.progress", "builtin/ppocr", pb.MODEL_STATE_LOADING
    )
    assert (event.message, event.progress) == ("loading the detector", 0.5)
    assert event.time.ToNanoseconds() == 1_700_000_000_125_000_000


def test_a_daemon_wide_event_has_no_state():
    event = convert.event(Event(kind="daemon.stopping", message="bye", sequence=1))
    assert (event.state, event.model, event.progress) == (pb.MODEL_STATE_UNSPECIFIED, "", -1.0)


@pytest.mark.parametrize(
    ("stage", "kind", "expected"),
    [("loading detector", "model.progress", "loading detector"), ("", "model.loading", "loading"),
     ("", "model.ready", "ready")],
)
def test_load_progress_names_its_stage(stage, kind, expected):
    step = convert.load_progress(
        Event(kind=kind, model="builtin/ppocr", state=ModelState.LOADING, stage=stage, progress=0.5,
              message="m"),
        "builtin/ppocr",
    )
    assert (step.model, step.stage, step.progress, step.message) == ("builtin/ppocr", expected, 0.5, "m")


def test_load_progress_fills_in_the_model_when_the_event_lacks_it():
    step = convert.load_progress(Event(kind="model.loading", state=ModelState.LOADING), "builtin/ppocr")
    assert step.model == "builtin/ppocr" and step.state == pb.MODEL_STATE_LOADING


def test_unload_result():
    answer = convert.unload_result(UnloadResult("builtin/ppocr", was_loaded=True, freed_bytes=42))
    assert (answer.model, answer.was_loaded, answer.freed_bytes) == ("builtin/ppocr", True, 42)
