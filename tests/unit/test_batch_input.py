"""``read_input``: a batch's JSONL as OpenAI reads it; every bad line named, no line run."""

from __future__ import annotations

import json

from ocrd.jobs.batch_input import MAX_ERRORS, read_input

CHAT = "/v1/chat/completions"


def line(custom_id: str = "a", **changes: object) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": CHAT,
               "body": {"model": "ppocr", "messages": []}, **changes}
    return json.dumps(request).encode()


def test_good_lines_are_read_in_order_with_their_model_and_body():
    lines, errors = read_input(line("a") + b"\n" + line("b") + b"\n", CHAT)
    assert errors == []
    assert [(x.number, x.custom_id, x.model) for x in lines] == [(1, "a", "ppocr"), (2, "b", "ppocr")]
    assert json.loads(lines[0].body) == {"model": "ppocr", "messages": []}


def test_each_bad_line_is_named_with_its_number_and_nothing_runs():
    data = b"\n".join([
        line("a"), b"[1, 2]", line("a"), line("m", method="GET"), line("u", url="/v1/ocr"),
        line("b", body={"messages": []}), line("s", body={"model": "x", "stream": True}),
        line(""), b"", line("z"),  # an empty line inside the file is a bad line
    ])
    lines, errors = read_input(data, CHAT)
    assert lines == []
    assert [(e.line, e.code, e.param) for e in errors] == [
        (2, "invalid_json_line", None), (3, "duplicate_custom_id", "custom_id"),
        (4, "invalid_request", "method"), (5, "invalid_url", "url"),
        (6, "missing_required_parameter", "body.model"), (7, "invalid_request", "body.stream"),
        (8, "missing_required_parameter", "custom_id"), (9, "invalid_json_line", None),
    ]
    assert all(e.message.startswith(f"line {e.line}: ") for e in errors)


def test_an_empty_file_and_a_flood_of_errors():
    assert [e.code for e in read_input(b"", CHAT)[1]] == ["empty_file"]
    _, errors = read_input(b"x\n" * 1000, CHAT)
    assert len(errors) == MAX_ERRORS
