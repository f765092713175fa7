"""The load a router picks nodes by (ocrd.metrics, docs/scale-out.md): running and waiting
requests of the whole node, unlabelled, and the share of the models' concurrency in use, per
model and for the node, read from the scheduler's slots at scrape time.
tests/integration/test_daemon_load_metrics.py reads them from a real daemon under load."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ocrd.core.slots import SlotInfo
from ocrd.events import ModelState
from ocrd.metrics import Metrics


def slot(model: str, state: ModelState, *, in_flight: int = 0, queued: int = 0,
         concurrency: int = 1) -> SlotInfo:
    return SlotInfo(id=model, aliases=(), description="", engine="builtin", state=state, device="cpu",
                    pid=None, memory_bytes=0, pinned=False, keep_alive=300.0, in_flight=in_flight,
                    queued=queued, queue_capacity=16, last_used=None, loaded_at=None, error="",
                    concurrency=concurrency)


def scraped(slots: list[SlotInfo]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(Metrics(lambda: slots).registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_an_idle_node_reports_nothing_running_or_waiting():
    values = scraped([slot("builtin/ppocr", ModelState.NOT_LOADED)])
    assert values[("ocrd_requests_running", ())] == 0
    assert values[("ocrd_requests_waiting", ())] == 0
    assert values[("ocrd_capacity_used_ratio", ())] == 0
    assert values[("ocrd_model_capacity_used_ratio", (("model", "builtin/ppocr"),))] == 0


def test_the_node_totals_add_up_the_models_and_the_ratio_counts_loaded_models_only():
    values = scraped([
        slot("builtin/ppocr", ModelState.READY, in_flight=1, queued=2, concurrency=1),
        slot("builtin/tesseract", ModelState.READY, in_flight=1, queued=0, concurrency=2),
        slot("org/vlm", ModelState.LOADING, queued=3, concurrency=4),
        slot("org/cached", ModelState.NOT_LOADED, concurrency=8),
    ])
    assert values[("ocrd_requests_running", ())] == 2
    assert values[("ocrd_requests_waiting", ())] == 5  # a load's waiters included
    # 2 holding of 1 + 2 + 4 served at once by the models with runners (org/cached has none).
    assert values[("ocrd_capacity_used_ratio", ())] == 2 / 7
    per_model = {dict(labels)["model"]: value for (name, labels), value in values.items()
                 if name == "ocrd_model_capacity_used_ratio"}
    assert per_model == {"builtin/ppocr": 1.0, "builtin/tesseract": 0.5, "org/vlm": 0.0,
                         "org/cached": 0.0}
    # The per-model gauges the totals come from are still there.
    assert values[("ocrd_model_in_flight", (("model", "builtin/ppocr"),))] == 1
    assert values[("ocrd_model_queued", (("model", "builtin/ppocr"),))] == 2


def test_the_ratio_never_passes_one():
    # More holders than turns for a moment: a reload lowered the concurrency while they ran.
    values = scraped([slot("builtin/ppocr", ModelState.READY, in_flight=3, concurrency=2)])
    assert values[("ocrd_model_capacity_used_ratio", (("model", "builtin/ppocr"),))] == 1.0
    assert values[("ocrd_capacity_used_ratio", ())] == 1.0
