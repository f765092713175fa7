"""Cleanup's judgements: which runner processes are orphans (and whose they are not), and which
loaded models it leaves alone. The processes and models themselves are exercised for real in
tests/integration/test_cleanup.py."""

from __future__ import annotations

from ocrd.core.slots import SlotInfo
from ocrd.events import ModelState
from ocrd.ops.cleanup import orphan_reason, why_kept
from ocrd.runners.orphans import RunnerProcess, command_line

DAEMON = 1000
OTHER_DAEMON = 2000


def runner(pid: int = 5000, *, claims: int = DAEMON, parent: int = DAEMON, model: str = "builtin/ppocr"):
    return RunnerProcess(pid=pid, claimed_parent=claims, parent=parent, model=model, start_time=1,
                         rss_bytes=0)


def test_a_runner_whose_daemon_is_gone_is_an_orphan_whoever_it_names():
    reparented = runner(claims=OTHER_DAEMON, parent=1)  # its ocrd died: init adopted it
    assert orphan_reason(reparented, DAEMON, set(), set()) == f"its ocrd (pid {OTHER_DAEMON}) is gone"
    assert orphan_reason(runner(claims=DAEMON, parent=1), DAEMON, set(), set()).endswith("is gone")


def test_the_runner_of_another_live_daemon_is_never_an_orphan():
    assert orphan_reason(runner(claims=OTHER_DAEMON, parent=OTHER_DAEMON), DAEMON, set(), set()) == ""


def test_a_runner_of_this_daemon_is_an_orphan_unless_a_slot_has_it_or_its_model_is_loading():
    stray = runner(pid=5001)
    assert orphan_reason(stray, DAEMON, set(), set()) == "started by this ocrd but none of its models' runner"
    assert orphan_reason(stray, DAEMON, {5001}, set()) == ""
    assert orphan_reason(stray, DAEMON, set(), {"builtin/ppocr"}) == ""  # its pid shows once ready
    assert orphan_reason(stray, DAEMON, set(), {"builtin/tesseract"}) != ""


def slot(state: ModelState = ModelState.READY, **fields: object) -> SlotInfo:
    base = dict(id="builtin/ppocr", aliases=("ppocr",), description="", engine="builtin", state=state,
                device="cpu", pid=5000, memory_bytes=1, pinned=False, keep_alive=300.0, in_flight=0,
                queued=0, queue_capacity=4, last_used=None, loaded_at=None, error="")
    return SlotInfo(**{**base, **fields})  # type: ignore[arg-type]


def test_only_a_ready_idle_unpinned_model_may_be_unloaded():
    assert why_kept(slot()) == ""
    assert why_kept(slot(pinned=True)) == "pinned"
    assert why_kept(slot(in_flight=1, queued=2)) == "1 request(s) in flight, 2 queued"
    assert why_kept(slot(ModelState.LOADING)) == "loading"
    assert why_kept(slot(ModelState.UNLOADING)) == "unloading"


def test_a_command_line_is_read_as_arguments_or_as_a_title_of_words():
    assert command_line(b"python\0-m\0ocrd.worker\0--model-id\0org/a b\0") == [
        b"python", b"-m", b"ocrd.worker", b"--model-id", b"org/a b"]
    # A warm runner that took a model retitled itself: one string, then NULs over the rest.
    assert command_line(b"python -m ocrd.worker --model-id org/a --engine builtin" + b"\0" * 40) == [
        b"python", b"-m", b"ocrd.worker", b"--model-id", b"org/a", b"--engine", b"builtin"]
