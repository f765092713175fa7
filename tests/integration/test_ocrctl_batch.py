"""The real ``ocrctl batch`` (a subprocess) against a real ``ocrd serve`` with the builtin PP-OCR:
a folder of generated PDFs and images submitted, followed and written out as markdown; a JSONL
file with a failing line; a malformed one; ls, show, cancel; and the results as JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_daemon_batches import WORDS, chat_line, jsonl
from tests.support.daemon import running_daemon, wait_until
from tests.support.documents import scanned_pdf
from tests.support.render import char_accuracy, render_text_image

BATCH_TIMEOUT = 300.0  # hang guard for a whole submit (a line is a PP-OCR read, ~0.5 s)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("state")
    with running_daemon({"state_dir": state, "batches": {"concurrency": 2}}) as running:
        yield running


def documents(folder: Path) -> dict[str, str]:
    """Two scanned PDFs (one in a subfolder), a PNG, and a file that is neither; the text each
    document holds, by its path in the folder."""
    (folder / "sub").mkdir(parents=True)
    (folder / "a.pdf").write_bytes(scanned_pdf([[WORDS[0]], [WORDS[1]]]))
    (folder / "sub" / "b.pdf").write_bytes(scanned_pdf([[WORDS[2]]]))
    (folder / "c.png").write_bytes(render_text_image([WORDS[3]]))
    (folder / "notes.txt").write_text("not a document\n")
    (folder / ".hidden.pdf").write_bytes(scanned_pdf([["HIDDEN"]]))
    return {"a.pdf": f"{WORDS[0]}\n{WORDS[1]}", "sub/b.pdf": WORDS[2], "c.png": WORDS[3]}


def test_submit_a_folder_follows_it_and_writes_each_documents_markdown(daemon, tmp_path):
    expected = documents(tmp_path / "scans")
    out = tmp_path / "out"

    result = daemon.ocrctl("batch", "submit", str(tmp_path / "scans"), "--model", "ppocr",
                           "--metadata", "job=scans", "-o", str(out), timeout=BATCH_TIMEOUT)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    batch_id = lines[0].split()[1].rstrip(":")
    assert lines[0].startswith(f"batch {batch_id}: /v1/ocr, input file-")
    assert "skipping 1 files that are not PDFs or images" in result.stderr  # notes.txt
    # Off a terminal: a progress line at each change of status, none redrawn in place.
    assert any(line.startswith(f"{batch_id} completed 3/3 lines") for line in lines), result.stdout
    assert "\r" not in result.stdout
    assert lines[-2:] == [f"wrote 3 files to {out}", f"batch {batch_id} completed: 3 lines"]
    written = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert written == {"a.md", "sub/b.md", "c.md"}
    for name, text in expected.items():
        markdown = (out / (name.rsplit(".", 1)[0] + ".md")).read_text()
        got = "\n".join(line.lstrip("# ") for line in markdown.splitlines()
                        if line and not line.startswith("<!--"))
        assert char_accuracy(text, got) >= 0.8, (name, markdown)
    pages = (out / "a.md").read_text()
    assert pages.index("<!-- page 0 -->") < pages.index("<!-- page 1 -->")

    shown = json.loads(daemon.ocrctl("batch", "show", batch_id, "--json").stdout)
    assert shown["status"] == "completed" and shown["metadata"] == {"job": "scans"}
    assert (shown["total"], shown["completed"], shown["failed"]) == (3, 3, 0)


def test_a_jsonl_file_with_a_failing_line_exits_1_and_its_results_say_which(daemon, tmp_path):
    source = tmp_path / "lines.jsonl"
    source.write_bytes(jsonl([chat_line("good", WORDS[4]),
                              chat_line("lost", "X", model="org/not-a-model")]))

    result = daemon.ocrctl("batch", "submit", str(source), "--json", timeout=BATCH_TIMEOUT)

    assert result.returncode == 1
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    final = steps[-1]
    assert final["status"] == "completed" and (final["completed"], final["failed"]) == (1, 1)
    assert final["endpoint"] == "/v1/chat/completions"  # read from the file's first line

    raw = daemon.ocrctl("batch", "results", final["id"])
    assert raw.returncode == 1
    assert raw.stderr == ("ocrctl: 1 of 2 lines failed (their lines carry an error or a "
                          "status_code of 400 or more)\n")
    by_id = {line["custom_id"]: line for line in map(json.loads, raw.stdout.splitlines())}
    assert sorted(by_id) == ["good", "lost"]
    content = by_id["good"]["response"]["body"]["choices"][0]["message"]["content"]
    assert char_accuracy(WORDS[4], content) >= 0.8
    assert by_id["lost"]["response"]["status_code"] == 404

    out = tmp_path / "out"
    files = daemon.ocrctl("batch", "results", final["id"], "-o", str(out))
    assert files.returncode == 1
    assert files.stderr.startswith("ocrctl: lost: HTTP 404: ")
    assert char_accuracy(WORDS[4], (out / "good.txt").read_text().strip()) >= 0.8
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [line["custom_id"] for line in errors] == ["lost"]


def test_a_malformed_file_is_refused_with_its_line_numbers(daemon, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl([chat_line("a", "A"), "{not json", chat_line("a", "B")]))

    result = daemon.ocrctl("batch", "submit", str(source), timeout=BATCH_TIMEOUT)

    assert result.returncode == 1
    assert "ocrctl: line 2: " in result.stderr and "ocrctl: line 3: " in result.stderr
    assert "failed: its input was refused; fix the lines above and submit again" in result.stderr


def test_detach_then_ls_show_and_cancel(daemon, tmp_path):
    source = tmp_path / "many.jsonl"
    source.write_bytes(jsonl([chat_line(f"n{n}", WORDS[n % len(WORDS)]) for n in range(40)]))

    submitted = daemon.ocrctl("batch", "submit", str(source), "--detach")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.split()[1].rstrip(":")
    assert submitted.stdout.splitlines()[-1] == f"follow it with 'ocrctl batch show {batch_id} --watch'"

    def progress() -> dict[str, Any]:
        return json.loads(daemon.ocrctl("batch", "show", batch_id, "--json").stdout)

    wait_until(lambda: progress()["completed"] >= 2, timeout=BATCH_TIMEOUT, interval=0.2)
    shown = daemon.ocrctl("batch", "show", batch_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"{batch_id}  /v1/chat/completions"
    assert "  status:   in_progress " in shown.stdout and "/40 lines" in shown.stdout

    listed = daemon.ocrctl("batch", "ls")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "ENDPOINT", "DONE", "FAILED", "CREATED"]
    assert rows[0].split()[:3] == [batch_id, "in_progress", "/v1/chat/completions"]

    not_yet = daemon.ocrctl("batch", "results", batch_id)
    assert not_yet.returncode == 1
    assert not_yet.stderr.startswith(f"ocrctl: batch {batch_id} is in_progress (")

    cancelled = daemon.ocrctl("batch", "cancel", batch_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"batch {batch_id} cancelling: lines running now finish")
    watched = daemon.ocrctl("batch", "show", batch_id, "--watch", timeout=BATCH_TIMEOUT)
    assert watched.returncode == 0, watched.stderr
    final = progress()
    assert final["status"] == "cancelled" and 2 <= final["completed"] < 40
    lines = daemon.ocrctl("batch", "results", batch_id).stdout.splitlines()
    by_id = {line["custom_id"]: line for line in map(json.loads, lines)}
    assert len(by_id) == 40  # every line: done ones with their answer, the rest as not run
    not_run = [line for line in by_id.values() if line["error"]]
    assert len(not_run) == 40 - final["completed"]
    assert {line["error"]["code"] for line in not_run} == {"batch_cancelled"}


def test_mistakes_get_one_line_each(daemon, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to read\n")
    cases = [
        (["batch", "submit", str(tmp_path / "missing.jsonl")], f"ocrctl: {tmp_path / 'missing.jsonl'}: "
         "no such file or folder\n"),
        (["batch", "submit", str(empty)], f"ocrctl: {empty} has no PDFs or images (of 1 files); "
         "ocrctl batch submit takes a folder of documents or a JSONL file\n"),
        (["batch", "show", "batch_nope"], "ocrctl: No such Batch object: batch_nope\n"),
        (["batch", "cancel", "batch_nope"], "ocrctl: No such Batch object: batch_nope\n"),
    ]
    for argv, message in cases:
        result = daemon.ocrctl(*argv)
        assert (result.returncode, result.stderr) == (1, message), argv
