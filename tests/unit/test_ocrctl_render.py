"""ocrctl's formatting: sizes, durations, the progress bar, tables."""

from __future__ import annotations

import pytest

from ocrctl import render
from ocrd.control.v1 import control_pb2 as pb


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(0, "-"), (512, "512 B"), (1536, "1.5 KiB"), (150 * 2**20, "150 MiB"), (int(7.5 * 2**30), "7.5 GiB")],
)
def test_sizes_use_binary_units(num_bytes, text):
    assert render.size(num_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (300, "5m"), (330, "5m30s"), (5400, "1h30m"), (86400 + 3 * 3600, "1d3h")],
)
def test_durations_show_the_two_largest_units(seconds, text):
    assert render.duration(seconds) == text


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25), ("0", 0)])
def test_keep_alive_durations_parse(text, seconds):
    assert render.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "-5", "10x", "5m soon"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        render.parse_duration(text)


def test_ago_and_never():
    assert render.ago(None) == "never"
    assert render.ago(1000.0, now=1090.0) == "1m30s ago"


def test_progress_bar():
    assert render.progress_bar(0.5, width=10) == "[#####-----]  50%"
    assert render.progress_bar(1.0, width=4) == "[####] 100%"
    assert render.progress_bar(-1, width=4).startswith("[....]")  # unknown fraction


def test_states_read_as_words():
    assert render.state(pb.MODEL_STATE_NOT_LOADED) == "not loaded"
    assert render.state(pb.MODEL_STATE_READY) == "ready"
    assert render.state(99) == "unspecified"


def test_table_aligns_columns_and_leaves_the_last_one_unpadded():
    text = render.table(["A", "LONGER"], [["xyz", "1"], ["x", "22"]])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "x    22"]
