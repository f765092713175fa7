"""``/v1/ocr`` with a model that has no document preset and structured extraction, through a real
``ocrd serve`` in front of an OpenAI server it does not run (``[[upstreams]]``, a FakeUpstream
standing for vLLM: it answers a ``response_format`` JSON schema with a value that follows it, as
vLLM's guided decoding does, or, with ``guided`` off, ignores it as servers without it do)."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate as validate_json

from tests.support.daemon import assert_openai_error, running_daemon
from tests.support.documents import PAGES, layout_pdf, mistral_client, pdf_document, text_pdf
from tests.support.fake_upstream import FakeUpstream

MODEL = "acme/fake-vlm"  # no catalog entry, no presets
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "pages": {"type": "integer"},
                                           "topics": {"type": "array", "items": {"type": "string"}}},
          "required": ["title", "pages"], "additionalProperties": False}
ANNOTATION = {"type": "json_schema", "json_schema": {"name": "report", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(MODEL) as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(upstream):
    with running_daemon({"upstreams": [{"model": MODEL, "url": upstream.url}]}) as running:
        yield running


@pytest.fixture(scope="module")
def mistral(daemon):
    with mistral_client(daemon) as client:
        yield client


def page_requests(upstream: FakeUpstream) -> list[dict]:
    return [r for r in upstream.requests if "response_format" not in r]


def test_a_model_without_a_document_preset_reads_pages_with_ocrds_prompt(mistral, upstream):
    upstream.requests.clear()
    response = mistral.ocr.process(model=MODEL, document=pdf_document(text_pdf()))
    assert [page.index for page in response.pages] == [0, 1, 2]
    sent = page_requests(upstream)
    assert len(sent) == 3
    for body in sent:
        image, text = body["messages"][0]["content"]
        assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
        assert text["text"].startswith("Convert this page to markdown")
    # The fake echoes the prompt: the page's markdown is the model's answer, as written.
    assert response.pages[0].markdown.startswith(f"fake-vllm {MODEL} read: Convert this page")
    assert response.pages[0].blocks is None  # markdown without a layout has no boxes


def test_document_annotation_follows_the_schema_and_sees_the_pages(mistral, upstream):
    upstream.requests.clear()
    response = mistral.ocr.process(model=MODEL, document=pdf_document(text_pdf()), pages=[0, 2],
                                   document_annotation_format=ANNOTATION,
                                   document_annotation_prompt="Give the report's title.")
    value = json.loads(response.document_annotation)
    validate_json(value, SCHEMA)
    (asked,) = [r for r in upstream.requests if "response_format" in r]
    assert asked["response_format"]["json_schema"]["schema"] == SCHEMA
    prompt = asked["messages"][0]["content"][0]["text"]
    assert prompt.startswith("Give the report's title.") and json.dumps(SCHEMA) in prompt
    for page in response.pages:  # the document it was asked about is the pages' markdown
        assert page.markdown in prompt
    assert len(response.pages) == 2


def test_figure_annotations_ask_about_each_crop(mistral, upstream, daemon):
    # A layout needs boxes: the builtin engine finds the chart; an annotation needs a language
    # model, which the builtin engine is not.
    with daemon.http(timeout=120) as http:
        refused = http.post("/v1/ocr", json={"model": "builtin/ppocr", "document": pdf_document(layout_pdf()),
                                             "bbox_annotation_format": ANNOTATION})
    assert_openai_error(refused, 400)
    assert "cannot extract structured data" in refused.json()["error"]["message"]


def test_an_answer_that_ignores_the_schema_is_a_clear_502(daemon, upstream):
    upstream.engine.guided = False
    try:
        with daemon.http(timeout=120) as http:
            response = http.post("/v1/ocr", json={"model": MODEL, "document": pdf_document(text_pdf([PAGES[0]])),
                                                  "document_annotation_format": ANNOTATION})
    finally:
        upstream.engine.guided = True
    assert_openai_error(response, 502)
    message = response.json()["error"]["message"]
    assert "does not follow the schema: it is not JSON" in message and "vLLM" in message


@pytest.mark.parametrize(("annotation", "words"), [
    ({"type": "json_object"}, '"type": "json_schema"'),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
     "not a valid JSON schema"),
])
def test_a_bad_schema_is_refused_before_any_work(daemon, upstream, annotation, words):
    upstream.requests.clear()
    with daemon.http(timeout=60) as http:
        response = http.post("/v1/ocr", json={"model": MODEL, "document": pdf_document(text_pdf()),
                                              "document_annotation_format": annotation})
    assert_openai_error(response, 400)
    assert words in response.json()["error"]["message"]
    assert upstream.requests == []
