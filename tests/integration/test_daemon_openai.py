"""The official ``openai`` client against a real ``ocrd serve`` (real runners, real OCR).

One daemon for the module: the tests only read from it (requests, model listings).
"""

from __future__ import annotations

import pytest

from tests.support.daemon import ocr_messages, running_daemon
from tests.support.openapi import validate
from tests.support.render import char_accuracy, render_text_image

ENGLISH = [
    "Invoice 2024-117 from Northwind Traders",
    "Deliver 12 boxes of paper to Room 4B",
    "Payment due within 30 days, thank you!",
    "Questions? Write to billing@example.com",
]
RUSSIAN = [
    "Широкая электрификация южных губерний",
    "даст мощный толчок подъёму сельского",
    "хозяйства. Счёт № 42 оплачен полностью.",
]


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.openai_client() as client:
        yield client


def test_ppocr_reads_english_lines_through_the_openai_client(client):
    reply = client.chat.completions.create(
        model="ppocr", messages=ocr_messages(render_text_image(ENGLISH), text="Extract text")
    )
    text = reply.choices[0].message.content
    assert char_accuracy("\n".join(ENGLISH), text) >= 0.95, text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "builtin/ppocr"
    validate("CreateChatCompletionResponse", reply.to_dict())


def test_tesseract_reads_russian_lines_through_the_openai_client(client):
    reply = client.chat.completions.create(
        model="tesseract", messages=ocr_messages(render_text_image(RUSSIAN))
    )
    text = reply.choices[0].message.content
    assert char_accuracy("\n".join(RUSSIAN), text) >= 0.90, text
    validate("CreateChatCompletionResponse", reply.to_dict())


def test_streamed_content_equals_the_non_streamed_content(client):
    messages = ocr_messages(render_text_image(ENGLISH[:2]))
    whole = client.chat.completions.create(model="ppocr", messages=messages)
    chunks = list(client.chat.completions.create(
        model="ppocr", messages=messages, stream=True, stream_options={"include_usage": True}
    ))

    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.to_dict())
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert char_accuracy("\n".join(ENGLISH[:2]), streamed) >= 0.95, streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: one last chunk with no choices and the usage. The builtin engine's tokens
    # are words: none in the prompt (images only), one per word of the text.
    words = len(streamed.split())
    assert chunks[-1].choices == []
    assert chunks[-1].usage.to_dict() == whole.usage.to_dict() == {
        "prompt_tokens": 0, "completion_tokens": words, "total_tokens": words}
    assert len({c.id for c in chunks}) == 1


def test_max_tokens_and_max_completion_tokens_cut_the_text_alike_and_the_newer_name_wins(client):
    # The daemon and its runner read one token limit (ocrd.openai_types.token_limit): either field
    # alone, max_completion_tokens when both are sent. A builtin token is a word.
    messages = ocr_messages(render_text_image(ENGLISH))
    replies = [client.chat.completions.create(model="ppocr", messages=messages, **limit) for limit in (
        {"max_tokens": 5}, {"max_completion_tokens": 5}, {"max_tokens": 2, "max_completion_tokens": 5})]
    texts = [reply.choices[0].message.content for reply in replies]
    assert len(texts[0].split()) == 5 and texts[0] == texts[1] == texts[2], texts
    for reply in replies:
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 5


def test_models_list_shows_every_builtin_model_in_openai_shape(client):
    raw = client.models.with_raw_response.list()
    validate("ListModelsResponse", raw.http_response.json())
    ids = [model.id for model in raw.parse()]
    assert {"builtin/ppocr", "builtin/tesseract"} <= set(ids)


def test_models_retrieve_accepts_an_alias_and_answers_the_canonical_model(client, daemon):
    model = client.models.retrieve("ppocr")
    assert model.id == "builtin/ppocr" and model.object == "model"
    with daemon.http() as http:
        raw = http.get("/v1/models/ppocr")
    assert raw.status_code == 200
    validate("Model", raw.json())
    assert raw.json()["ocrd"]["aliases"] == ["ppocr"]
    assert (raw.json()["ocrd"]["license"], raw.json()["ocrd"]["license_note"]) == ("apache-2.0", None)


def test_metrics_count_requests_by_model_and_status_and_show_model_state(daemon, client):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    def samples() -> dict[tuple[str, tuple], float]:
        text = httpx.get(f"{daemon.base_url}/metrics", timeout=30).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    ok_key = ("ocrd_requests_total", (("model", "builtin/ppocr"), ("status", "200")))
    before = samples().get(ok_key, 0.0)
    client.chat.completions.create(model="ppocr", messages=ocr_messages(render_text_image(["metrics"])))
    after = samples()

    assert after[ok_key] == before + 1
    assert after[("ocrd_model_state", (("model", "builtin/ppocr"), ("state", "ready")))] == 1.0
    assert after[("ocrd_model_state", (("model", "builtin/ppocr"), ("state", "failed")))] == 0.0
    assert after[("ocrd_model_memory_bytes", (("model", "builtin/ppocr"),))] > 0
    assert after[("ocrd_model_events_total", (("kind", "model.ready"), ("model", "builtin/ppocr")))] >= 1
