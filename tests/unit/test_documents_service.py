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


MINERU = "opendatalab/MinerU2.5-2509-1.2B"
MINERU_LAYOUT = ("<|box_start|>100 50 900 90<|box_end|><|ref_start|>title<|ref_end|><|rotate_up|>"
                 "<|box_start|>100 120 900 300<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>"
                 "<|box_start|>100 320 900 600<|box_end|><|ref_start|>table<|ref_end|><|rotate_up|>"
                 "<|box_start|>100 620 500 700<|box_end|><|ref_start|>image<|ref_end|>"
                 "<|box_start|>100 720 900 760<|box_end|><|ref_start|>equation<|ref_end|><|rotate_right|>"
                 "<|box_start|>450 960 550 980<|box_end|><|ref_start|>page_number<|ref_end|><|rotate_up|>")


async def test_mineru_reads_a_page_in_two_steps_layout_then_each_block_cropped():
    import base64
    import io

    from PIL import Image

    from ocrd.documents.tables import html_rows

    asked: list[tuple[str, tuple[int, int]]] = []
    answers = {"layout": MINERU_LAYOUT, "table": "<fcel>A<fcel>B<nl><fcel>1<ecel><nl>", "formula": "E = mc^2",
               "text": "Revenue grew."}

    async def ask(body: dict) -> str:
        preset = body["ocrd"]["preset"]
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        asked.append((preset, Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size))
        return answers[preset]

    document = {"type": "document_url", "document_url": data_url(text_pdf(), "application/pdf")}
    result = await service().process(OcrRequest.model_validate({"model": MINERU, "document": document,
                                                                "pages": [0]}), ask)
    (page,) = result["pages"]
    width, height = page["dimensions"]["width"], page["dimensions"]["height"]
    assert asked[0] == ("layout", (1036, 1036))  # the whole page, at the client's layout size
    crops = dict((preset, size) for preset, size in asked[1:] if preset != "text")
    assert crops["table"] == (round(0.9 * width) - round(0.1 * width), round(0.6 * height) - round(0.32 * height))
    # The equation's block was marked turned right: its crop is turned upright (sides swapped).
    assert crops["formula"] == (round(0.76 * height) - round(0.72 * height), round(0.9 * width) - round(0.1 * width))
    assert sorted(p for p, _ in asked[1:]) == ["formula", "table", "text", "text", "text"]  # not the image
    types = [b["type"] for b in page["blocks"]]
    assert types == ["title", "text", "table", "image", "equation", "footer"]
    table = next(b for b in page["blocks"] if b["type"] == "table")
    assert html_rows(table["content"]) == [["A", "B"], ["1", ""]]
    assert page["markdown"].startswith("# Revenue grew.\n\nRevenue grew.\n\n<table>")
    assert "$$\nE = mc^2\n$$" in page["markdown"]
