"""``DocumentService`` over a stand-in for the chat path (its ``ChatCaller``): what is asked of the
model for pages and figures, and how the answers become Mistral's response. The PDF is real and
rendered for real; the HTTP route and the runners are tested in tests/integration."""

from __future__ import annotations

import json

import pytest

from ocrd.catalog.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.documents.protocol import OcrRequest
from ocrd.documents.service import DocumentService
from ocrd.errors import UpstreamError
from tests.support.documents import text_pdf
from tests.support.render import data_url

DEEPSEEK = "deepseek-ai/DeepSeek-OCR"
PAGE_ANSWER = ("<|ref|>title<|/ref|><|det|>[[100, 50, 900, 90]]<|/det|>\n# Results\n\n"
               "<|ref|>image<|/ref|><|det|>[[100, 200, 500, 400]]<|/det|>\n\n"
               "<|ref|>text<|/ref|><|det|>[[100, 450, 900, 600]]<|/det|>\nRevenue grew.")
SCHEMA = {"type": "object", "properties": {"kind": {"type": "string", "enum": ["chart", "photo"]}},
          "required": ["kind"]}
ANNOTATION = {"type": "json_schema", "json_schema": {"name": "figure", "schema": SCHEMA}}


def service() -> DocumentService:
    catalog = Catalog.load_default()
    return DocumentService(catalog.resolve, lambda _model: 2, Settings)


def request(**fields) -> OcrRequest:
    return OcrRequest.model_validate({"model": DEEPSEEK, "document": {
        "type": "document_url", "document_url": data_url(text_pdf(), "application/pdf")}, **fields})


async def test_pages_are_asked_with_the_document_preset_and_figures_are_annotated_from_their_crops():
    asked: list[dict] = []

    async def ask(body: dict) -> str:
        asked.append(body)
        return '{"kind": "chart"}' if "response_format" in body else PAGE_ANSWER

    result = await service().process(request(pages=[0, 1], bbox_annotation_format=ANNOTATION), ask)
    page_asks = [b for b in asked if "response_format" not in b]
    figure_asks = [b for b in asked if "response_format" in b]
    assert [b["ocrd"] for b in page_asks] == [{"preset": "markdown"}] * 2  # the catalog's document preset
    assert len(figure_asks) == 2  # one figure per page
    for body in figure_asks:
        crop, text = body["messages"][0]["content"]
        assert crop["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert json.dumps(SCHEMA) in text["text"]
    pages = result["pages"]
    assert [p["dimensions"]["dpi"] for p in pages] == [144, 144]  # DeepSeek-OCR's resolution
    assert [image["id"] for p in pages for image in p["images"]] == ["img-0.jpeg", "img-1.jpeg"]
    assert all(json.loads(p["images"][0]["image_annotation"]) == {"kind": "chart"} for p in pages)
    assert all(p["images"][0]["image_base64"] is None for p in pages)  # crops were not asked for


async def test_a_figure_annotation_outside_the_schema_fails_the_request():
    async def ask(body: dict) -> str:
        return '{"kind": "table"}' if "response_format" in body else PAGE_ANSWER

    with pytest.raises(UpstreamError, match="at kind: 'table' is not one of"):
        await service().process(request(pages=[0], bbox_annotation_format=ANNOTATION), ask)


async def test_fenced_json_is_accepted():
    async def ask(body: dict) -> str:
        return '```json\n{"kind": "photo"}\n```' if "response_format" in body else PAGE_ANSWER

    result = await service().process(request(pages=[0], document_annotation_format=ANNOTATION), ask)
    assert json.loads(result["document_annotation"]) == {"kind": "photo"}
