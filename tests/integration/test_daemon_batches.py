"""OpenAI's Batch API on a real ``ocrd serve`` with the builtin PP-OCR, driven by the official
``openai`` client: a batch of chat lines read for real, good and bad lines apart, a malformed
input file, a cancel mid-batch, live requests beside a batch, and a SIGKILL mid-batch then a
restart (every line exactly once)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.daemon import ocr_messages, running_daemon, wait_until
from tests.support.documents import scanned_pdf
from tests.support.render import char_accuracy, render_text_image

WORDS = ["ALPHA 101", "BRAVO 202", "CHARLIE 303", "DELTA 404", "ECHO 505", "FOXTROT 606"]
BATCH_TIMEOUT = 300.0  # hang guard: a line is a PP-OCR read, ~0.5 s on two cores


def chat_line(custom_id: str, text: str, model: str = "ppocr") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": ocr_messages(render_text_image([text]))}}


def jsonl(lines: list[dict[str, Any]] | list[str]) -> bytes:
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)


def upload(client: Any, lines: list[Any]) -> str:
    return client.files.create(file=("batch.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id


def finished(client: Any, batch_id: str, timeout: float = BATCH_TIMEOUT) -> Any:
    terminal = {"completed", "failed", "expired", "cancelled"}
    return wait_until(lambda: (b := client.batches.retrieve(batch_id)).status in terminal and b,
                      timeout=timeout, interval=0.25)


def read_lines(client: Any, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    lines = [json.loads(line) for line in text.splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id twice in one file"
    return by_id


def queued_lines(daemon: Any) -> float:
    with daemon.http() as http:
        metrics = http.get("/metrics").text
    prefix = 'ocrd_batch_lines_queued{model="builtin/ppocr"} '
    return sum(float(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix))


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


def config(state_dir: Path, concurrency: int = 2) -> dict[str, Any]:
    return {"state_dir": state_dir, "batches": {"concurrency": concurrency}}


@pytest.fixture(scope="module")
def daemon(state_dir):
    with running_daemon(config(state_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.openai_client(timeout=120) as openai_client:
        yield openai_client


def test_a_batch_of_good_and_bad_lines_completes_with_each_in_its_file(client, daemon):
    lines = [chat_line(f"ok-{n}", word) for n, word in enumerate(WORDS[:4])]
    lines.insert(2, chat_line("no-such-model", "X", model="org/not-a-model"))
    bad_image = chat_line("bad-image", "X")
    bad_image["body"]["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,AAAA"
    lines.append(bad_image)
    created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"job": "t1"})
    assert created.status in ("validating", "in_progress") and created.metadata == {"job": "t1"}

    batch = finished(client, created.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 4, 2)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at

    output = read_lines(client, batch.output_file_id)
    assert sorted(output) == [f"ok-{n}" for n in range(4)]
    for n, word in enumerate(WORDS[:4]):
        response = output[f"ok-{n}"]["response"]
        assert response["status_code"] == 200 and output[f"ok-{n}"]["error"] is None
        assert char_accuracy(word, response["body"]["choices"][0]["message"]["content"]) >= 0.8
    errors = read_lines(client, batch.error_file_id)
    assert errors["no-such-model"]["response"]["status_code"] == 404
    with daemon.http() as http:
        metrics = http.get("/metrics").text
    assert 'ocrd_batch_lines_total{model="builtin/ppocr",outcome="completed"} 4.0' in metrics
    assert 'ocrd_batch_lines_total{model="unknown",outcome="failed"} 1.0' in metrics
    assert errors["bad-image"]["response"]["status_code"] == 400
    assert errors["bad-image"]["response"]["body"]["error"]["param"].startswith("messages.0.content.0")


def test_a_malformed_input_file_fails_validation_naming_its_lines(client):
    lines = [chat_line("a", "A"), "{not json", chat_line("a", "B"),
             {**chat_line("c", "C"), "url": "/v1/embeddings"}]
    created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                    completion_window="24h")
    batch = finished(client, created.id)
    assert batch.status == "failed" and batch.failed_at
    found = {(error.line, error.code) for error in batch.errors.data}
    assert found == {(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_url")}
    assert batch.output_file_id is None and batch.request_counts.total == 0


def test_bad_requests_to_create_are_refused_in_openais_shape(client):
    user_file = client.files.create(file=("a.txt", b"x"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=user_file, endpoint="/v1/chat/completions",
                              completion_window="24h")
    assert caught.value.body["param"] == "input_file_id"
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=user_file, endpoint="/v1/embeddings", completion_window="24h")
    assert caught.value.body["param"] == "endpoint"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def test_a_cancel_mid_batch_keeps_what_was_done_and_live_requests_go_first(client, daemon):
    lines = [chat_line(f"c-{n}", WORDS[n % len(WORDS)]) for n in range(24)]
    input_id = upload(client, lines)
    created = client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions",
                                    completion_window="24h")
    wait_until(lambda: client.batches.retrieve(created.id).request_counts.completed >= 2,
               timeout=BATCH_TIMEOUT, interval=0.1)
    with pytest.raises(openai.ConflictError):
        client.files.delete(input_id)  # the input of a batch that has not finished
    assert 0 < queued_lines(daemon) <= 22

    # A live request while the batch holds the model: served (it waits for one line at most).
    answer = client.chat.completions.create(model="ppocr", messages=ocr_messages(render_text_image(["LIVE 777"])))
    assert char_accuracy("LIVE 777", answer.choices[0].message.content) >= 0.8
    assert client.batches.retrieve(created.id).status == "in_progress"

    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = finished(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    done = read_lines(client, batch.output_file_id)
    left = read_lines(client, batch.error_file_id)
    assert batch.request_counts.completed == len(done) >= 2 and batch.request_counts.total == 24
    assert set(done) | set(left) == {f"c-{n}" for n in range(24)} and not set(done) & set(left)
    assert all(line["error"]["code"] == "batch_cancelled" for line in left.values())
    assert queued_lines(daemon) == 0
    client.files.delete(input_id)  # finished: the input may go now


def test_two_batches_and_live_traffic_at_once_all_get_their_answers(client, daemon):
    """Two batches submitted together run one after the other, oldest first; live requests sent
    all along are each answered while the batches run, never held until they end."""
    first_lines = [chat_line(f"one-{n}", WORDS[n % len(WORDS)]) for n in range(8)]
    second_lines = [chat_line(f"two-{n}", WORDS[(n + 3) % len(WORDS)]) for n in range(6)]
    first = client.batches.create(input_file_id=upload(client, first_lines),
                                  endpoint="/v1/chat/completions", completion_window="24h")
    second = client.batches.create(input_file_id=upload(client, second_lines),
                                   endpoint="/v1/chat/completions", completion_window="24h")
    live: list[tuple[str, bool]] = []  # (text read, whether a batch still had lines to run)
    while len(live) < 6:
        answer = client.chat.completions.create(model="ppocr", messages=ocr_messages(render_text_image(["LIVE 31"])))
        running = [client.batches.retrieve(b.id).status for b in (first, second)]
        live.append((answer.choices[0].message.content, any(s in ("validating", "in_progress") for s in running)))

    one, two = finished(client, first.id), finished(client, second.id)
    assert (one.status, one.request_counts.completed, two.status, two.request_counts.completed) == (
        "completed", 8, "completed", 6)
    assert two.in_progress_at >= one.finalizing_at  # one batch at a time, oldest first
    for batch, lines in ((one, first_lines), (two, second_lines)):
        output = read_lines(client, batch.output_file_id)
        assert sorted(output) == sorted(line["custom_id"] for line in lines)
        assert batch.error_file_id is None
    assert all(char_accuracy("LIVE 31", text) >= 0.8 for text, _ in live)
    assert live[0][1] and live[2][1], "live requests answered only after the batches ended"


def test_batches_are_listed_newest_first_with_openais_paging(client):
    ids = [client.batches.create(input_file_id=upload(client, [chat_line("x", "X")]),
                                 endpoint="/v1/chat/completions", completion_window="24h").id
           for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data][0] == ids[0]
    for batch_id in ids:
        assert finished(client, batch_id).status == "completed"


def test_a_sigkill_mid_batch_then_a_restart_resumes_with_every_line_exactly_once(tmp_path):
    lines = [chat_line(f"k-{n}", WORDS[n % len(WORDS)]) for n in range(16)]
    with running_daemon(config(tmp_path, concurrency=1)) as first, first.openai_client(timeout=120) as client:
        created = client.batches.create(input_file_id=upload(client, lines),
                                        endpoint="/v1/chat/completions", completion_window="24h")
        wait_until(lambda: client.batches.retrieve(created.id).request_counts.completed >= 3,
                   timeout=BATCH_TIMEOUT, interval=0.05)
        first.process.kill()  # SIGKILL: no shutdown, lines in flight lost uncommitted
        first.process.wait()
        # Its runner notices its daemon is gone on its own (ocrd.runners.parent_death).
        wait_until(lambda: not first.surviving_runners(), timeout=60)
    with running_daemon(config(tmp_path, concurrency=2)) as again, again.openai_client(timeout=120) as client:
        batch = finished(client, created.id)
        assert batch.status == "completed"
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (16, 16, 0)
        output = read_lines(client, batch.output_file_id)
        assert sorted(output) == sorted(f"k-{n}" for n in range(16))
        for n in range(16):
            body = output[f"k-{n}"]["response"]["body"]
            assert char_accuracy(WORDS[n % len(WORDS)], body["choices"][0]["message"]["content"]) >= 0.8


def test_an_ocr_batch_reads_uploaded_pdfs_by_file_id(client):
    """Documents in bulk: each line a /v1/ocr request for a PDF uploaded once (``file_id``)."""
    documents = {f"doc-{n}": [[f"Invoice {n}0{n} paid", f"Total {n}{n}.00 EUR"]] for n in range(1, 4)}
    lines = []
    for custom_id, pages in documents.items():
        pdf = client.files.create(file=(f"{custom_id}.pdf", io.BytesIO(scanned_pdf(pages))), purpose="ocr")
        lines.append({"custom_id": custom_id, "method": "POST", "url": "/v1/ocr",
                      "body": {"model": "ppocr", "document": {"type": "file", "file_id": pdf.id}}})
    lines.append({"custom_id": "gone", "method": "POST", "url": "/v1/ocr",
                  "body": {"model": "ppocr", "document": {"type": "file", "file_id": "file-nonesuch"}}})
    created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/ocr",
                                    completion_window="24h")
    batch = finished(client, created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 3
    output = read_lines(client, batch.output_file_id)
    for custom_id, pages in documents.items():
        body = output[custom_id]["response"]["body"]
        assert [page["index"] for page in body["pages"]] == [0]
        assert char_accuracy("\n".join(pages[0]), body["pages"][0]["markdown"]) >= 0.85, body["pages"][0]
    gone = read_lines(client, batch.error_file_id)["gone"]["response"]
    assert gone["status_code"] == 404 and gone["body"]["error"]["param"] == "document.file_id"


def test_chat_and_ocr_take_an_uploaded_pdf_by_file_id(client, daemon):
    pages = [["Uploaded once", "read twice"]]
    pdf = client.files.create(file=("up.pdf", io.BytesIO(scanned_pdf(pages))), purpose="user_data")
    reply = client.chat.completions.create(model="ppocr", messages=[
        {"role": "user", "content": [{"type": "file", "file": {"file_id": pdf.id}}]}])
    assert char_accuracy("\n".join(pages[0]), reply.choices[0].message.content) >= 0.85
    with daemon.http(timeout=120) as http:
        answer = http.post("/v1/ocr", json={"model": "ppocr", "document": {"type": "file", "file_id": pdf.id}})
    assert answer.status_code == 200, answer.text
    assert char_accuracy("\n".join(pages[0]), answer.json()["pages"][0]["markdown"]) >= 0.85
