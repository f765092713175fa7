"""``ocrctl ocr``: the address and default model come from the real control server, the request
goes over real HTTP to a stand-in of ocrd's OpenAI API (the HTTP app has its own tests)."""

from __future__ import annotations

import base64
import json

import pytest
from PIL import Image

from tests.support.control import PPOCR
from tests.support.fakes import FakeOpenAIServer


@pytest.fixture
def openai_server(daemon_info):
    with FakeOpenAIServer(reply="Hello, world") as server:
        daemon_info.http_url = server.url  # GetStatus tells ocrctl where the HTTP API is
        yield server


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "page.png"
    Image.new("RGB", (32, 16), "white").save(path)
    return path


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (32, 16), "white").save(path, format="JPEG")
    return path


async def test_ocr_sends_the_image_as_a_data_url_to_the_default_model_and_prints_the_text(
    ocrctl, openai_server, png
):
    result = await ocrctl("ocr", str(png))
    assert (result.rc, result.out) == (0, "Hello, world\n"), result.err
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions" and request.body["model"] == PPOCR
    (part,) = request.body["messages"][0]["content"]
    prefix = "data:image/png;base64,"
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(part["image_url"]["url"].removeprefix(prefix)) == png.read_bytes()


async def test_ocr_with_a_model_and_a_prompt(ocrctl, openai_server, jpeg):
    result = await ocrctl("ocr", str(jpeg), "--model", "tesseract", "--prompt", "Read the page.")
    assert result.rc == 0
    body = openai_server.requests[0].body
    assert body["model"] == "tesseract"
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "Read the page."}
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")


async def test_several_files_get_a_header_each(ocrctl, openai_server, png, jpeg):
    result = await ocrctl("ocr", str(png), str(jpeg))
    assert result.out == f"==> {png} <==\nHello, world\n\n==> {jpeg} <==\nHello, world\n"


async def test_json_prints_the_raw_response_of_each_file(ocrctl, openai_server, png, jpeg):
    result = await ocrctl("ocr", "--json", str(png), str(jpeg))
    answers = [json.loads(line) for line in result.out.splitlines()]
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["Hello, world"] * 2
    assert answers[0]["object"] == "chat.completion"


async def test_an_unsupported_file_is_one_line_and_the_others_still_run(ocrctl, openai_server, png, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    result = await ocrctl("ocr", str(notes), str(png))
    assert result.rc == 1
    assert result.err == f"ocrctl: {notes}: unsupported file type (supported: PNG, JPEG, WebP, GIF, BMP, TIFF)\n"
    assert result.out.endswith(f"==> {png} <==\nHello, world\n")
    assert len(openai_server.requests) == 1


async def test_a_pdf_is_one_line_saying_how_to_turn_its_pages_into_images(ocrctl, openai_server, png, tmp_path):
    pdf = tmp_path / "scan.pdf"
    Image.new("RGB", (32, 16), "white").save(pdf)  # a real one-page PDF
    assert pdf.read_bytes().startswith(b"%PDF")
    result = await ocrctl("ocr", str(pdf), str(png))
    assert result.rc == 1
    assert result.err == (f"ocrctl: {pdf}: a PDF, which ocrctl ocr cannot send yet: convert its pages to "
                          f"images first (`pdftoppm -png -r 150 {pdf} page`, then `ocrctl ocr page-*.png`)\n")
    assert result.out.endswith(f"==> {png} <==\nHello, world\n")
    assert len(openai_server.requests) == 1  # the PDF was never sent


async def test_a_missing_file_is_one_line(ocrctl, openai_server, tmp_path):
    result = await ocrctl("ocr", str(tmp_path / "absent.png"))
    assert (result.rc, result.err) == (1, f"ocrctl: {tmp_path / 'absent.png'}: No such file or directory\n")


async def test_an_http_error_prints_the_openai_error_message(ocrctl, openai_server, png):
    openai_server.error = (404, "model 'x' does not exist")
    result = await ocrctl("ocr", str(png), "--model", "x")
    assert (result.rc, result.out) == (1, "")
    assert result.err == f"ocrctl: {png}: model 'x' does not exist\n"


async def test_an_unreachable_http_api_is_one_line(ocrctl, daemon_info, png):
    daemon_info.http_url = "http://127.0.0.1:1"  # nothing listens on port 1
    result = await ocrctl("ocr", str(png))
    assert result.rc == 1 and result.err.count("\n") == 1
    assert result.err.startswith("ocrctl: cannot reach ocrd's HTTP API at http://127.0.0.1:1: ")
