"""``ocrctl batch``'s pieces on their own: the names results are written under, the progress
line and its rate, and what a folder holds."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from ocrctl.batch_input import endpoint_of, ocr_line, read_folder
from ocrctl.batch_progress import Rate, summary
from ocrctl.batch_results import ResultWriter, line_failure, safe_name
from ocrctl.client import CommandError
from ocrctl.commands.ocr import image_type
from ocrd.control.v1 import control_pb2 as pb


@pytest.mark.parametrize(("custom_id", "extension", "name"), [
    ("scans/a.pdf", ".md", "scans/a.md"),
    ("c.PNG", ".md", "c.md"),
    ("request-1", ".txt", "request-1.txt"),
    ("../../etc/passwd", ".md", "etc/passwd.md"),
    ("/abs/olute.pdf", ".md", "abs/olute.md"),
    ("a\\b\\c.jpg", ".md", "a/b/c.md"),
    ("..", ".md", "line.md"),
    ("bad\x00name:with*chars?.pdf", ".md", "bad_name_with_chars_.md"),
    ("report.v2", ".txt", "report.v2.txt"),
])
def test_a_custom_id_becomes_a_relative_path_inside_the_folder(custom_id, extension, name):
    assert safe_name(custom_id, extension) == PurePosixPath(name)


def ocr_result(custom_id: str, pages: list[str]) -> bytes:
    body = {"pages": [{"index": i, "markdown": text} for i, text in enumerate(pages)]}
    return json.dumps({"id": "r", "custom_id": custom_id, "error": None,
                       "response": {"status_code": 200, "request_id": "q", "body": body}}).encode() + b"\n"


def test_results_go_one_file_per_line_and_failures_to_errors_jsonl(tmp_path):
    failed = json.dumps({"custom_id": "x.pdf", "response": {"status_code": 404, "body": {
        "error": {"message": "model org/nope is not known"}}}, "error": None}).encode() + b"\n"
    not_run = json.dumps({"custom_id": "y.pdf", "response": None, "error": {
        "code": "batch_cancelled", "message": "the batch was cancelled before this line ran"}}).encode()
    with ResultWriter(tmp_path / "out", "/v1/ocr") as writer:
        writer.add(ocr_result("a.pdf", ["first", "second"]))
        writer.add(ocr_result("a.png", ["picture"]))  # the same name once its extension goes
        writer.add(failed)
        writer.add(not_run)

    out = tmp_path / "out"
    assert (out / "a.md").read_text() == "<!-- page 0 -->\n\nfirst\n\n<!-- page 1 -->\n\nsecond\n"
    assert (out / "a-1.md").read_text() == "<!-- page 0 -->\n\npicture\n"
    assert writer.written.failed == [("x.pdf", "HTTP 404: model org/nope is not known"),
                                     ("y.pdf", "the batch was cancelled before this line ran")]
    kept = (out / "errors.jsonl").read_bytes().splitlines()
    assert kept == [failed.strip(), not_run]
    assert line_failure(json.loads(ocr_result("a", ["x"]))) is None


def test_a_result_line_that_is_not_json_is_one_clear_error(tmp_path):
    with ResultWriter(tmp_path, "/v1/ocr") as writer, pytest.raises(CommandError, match="not a JSON object"):
        writer.add(b"<html>\n")


def batch(status: str, total: int, completed: int, failed: int = 0, started: float | None = 1000.0) -> pb.Batch:
    message = pb.Batch(id="batch_1", status=status, total=total, completed=completed, failed=failed,
                       ended=status in ("completed", "failed", "expired", "cancelled"))
    if started is not None:
        message.in_progress_at.seconds = int(started)
    return message


def test_the_progress_line_says_done_failed_rate_and_time_left():
    assert summary(batch("in_progress", 300, 118, 2), 4.0) == "in_progress 120/300 lines, 2 failed, 4.0/s, 45s left"
    assert summary(batch("in_progress", 300, 10), 0.5) == "in_progress 10/300 lines, 30.0/min, 9m40s left"
    assert summary(batch("in_progress", 300, 0), None) == "in_progress 0/300 lines"
    assert summary(batch("completed", 3, 3), 9.0) == "completed 3/3 lines"
    assert summary(batch("validating", 0, 0, started=None), None) == (
        "validating (reading its input, or waiting for an earlier batch)")


def test_the_rate_is_what_the_watcher_saw_over_the_last_minute():
    now = [1100.0]
    rate = Rate(clock=lambda: now[0])
    # 100 s in, 500 lines: 5/s since it started; the watcher has seen nothing yet.
    rate.observe(batch("in_progress", 1000, 500))
    assert rate.per_second(batch("in_progress", 1000, 500)) == pytest.approx(5.0)
    for done in range(510, 600, 10):  # then 1 line a second, for 90 s
        now[0] += 10
        rate.observe(batch("in_progress", 1000, done))
    assert rate.per_second(batch("in_progress", 1000, 590)) == pytest.approx(1.0)


def test_a_folder_gives_its_documents_by_content_in_path_order(tmp_path):
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "scan").write_bytes(b"%PDF-1.7\n...")  # no extension: its bytes decide
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    (tmp_path / "a.pdf").write_bytes(b"this is text, not a PDF")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.pdf").write_bytes(b"%PDF-1.4")

    found = read_folder(tmp_path, image_type)

    assert [p.relative_to(tmp_path).as_posix() for p in found.documents] == ["b.jpg", "z/scan"]
    assert found.skipped == [tmp_path / "a.pdf"]
    line = json.loads(ocr_line("z/scan", "ppocr", "file-1"))
    assert line == {"custom_id": "z/scan", "method": "POST", "url": "/v1/ocr",
                    "body": {"model": "ppocr", "document": {"type": "file", "file_id": "file-1"}}}


def test_the_endpoint_comes_from_the_flag_else_the_first_line(tmp_path: Path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"custom_id": "a", "url": "/v1/ocr"}\n{"custom_id": "b"}\n')
    assert endpoint_of(source, "") == "/v1/ocr"
    assert endpoint_of(source, "/v1/chat/completions") == "/v1/chat/completions"
    source.write_text("{not json\n")
    assert endpoint_of(source, "") == "/v1/chat/completions"  # the daemon's validation says why
