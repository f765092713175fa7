"""``ocrctl ocr``: images against the real control server and a stand-in of ocrd's OpenAI API
(the address and default model come from the control server, the request goes over real HTTP);
PDFs against a real ``ocrd serve`` with its builtin engines, through the real ``ocrctl`` binary,
their text scored against what the test PDFs hold."""

from __future__ import annotations

import base64
import json
import re

import pypdfium2
import pytest
from mistralai.client.models import OCRResponse
from PIL import Image

from tests.support.control import PPOCR
from tests.support.daemon import running_daemon
from tests.support.documents import PAGES, encrypted_pdf, scanned_pdf, text_pdf
from tests.support.fakes import FakeOpenAIServer
from tests.support.render import char_accuracy, render_text_image

TESSERACT = "builtin/tesseract"


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
    assert result.err == f"ocrctl: {notes}: unsupported file type (supported: PDF, PNG, JPEG, WebP, GIF, BMP, TIFF)\n"
    assert result.out.endswith(f"==> {png} <==\nHello, world\n")
    assert len(openai_server.requests) == 1


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


# --- PDFs (and an image as Mistral's page) through a real daemon ----------------------------------


@pytest.fixture(scope="module")
def daemon():
    with running_daemon({"builtin": {"tesseract_languages": "eng"}}) as running:
        yield running


@pytest.fixture
def report(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(text_pdf())
    return path


def pages_of_markdown(markdown: str) -> dict[int, str]:
    """{page index: its markdown} from ``ocrctl ocr``'s markdown of a PDF."""
    parts = re.split(r"^<!-- page (\d+) -->$", markdown, flags=re.MULTILINE)
    assert parts[0] == "", markdown  # nothing before the first page's marker
    return {int(index): text for index, text in zip(parts[1::2], parts[2::2], strict=True)}


def test_a_pdf_comes_out_as_markdown_with_each_page_after_its_marker(daemon, report):
    result = daemon.ocrctl("ocr", str(report))  # the daemon's default model: builtin/ppocr
    assert (result.returncode, result.stderr) == (0, "")
    pages = pages_of_markdown(result.stdout)
    assert list(pages) == [0, 1, 2]
    for text, lines in zip(pages.values(), PAGES, strict=True):
        assert char_accuracy("\n".join(lines), text) >= 0.9, result.stdout


def test_json_with_pages_is_mistrals_ocr_response_of_the_selected_pages(daemon, report):
    result = daemon.ocrctl("ocr", str(report), "--model", TESSERACT, "--pages", "2,0", "--format", "json")
    assert (result.returncode, result.stderr) == (0, "")
    response = OCRResponse.model_validate(json.loads(result.stdout))  # Mistral's own client model
    assert response.model == TESSERACT
    assert [page.index for page in response.pages] == [0, 2]
    assert response.usage_info.pages_processed == 2
    assert response.usage_info.doc_size_bytes == report.stat().st_size
    for page, lines in zip(response.pages, (PAGES[0], PAGES[2]), strict=True):
        assert char_accuracy("\n".join(lines), page.markdown) >= 0.9, page.markdown
        assert page.dimensions.dpi == 300 and page.blocks  # tesseract's catalog resolution


def test_two_files_at_once_into_a_directory_as_text(daemon, report, tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(scanned_pdf())
    out = tmp_path / "out"  # created by ocrctl
    result = daemon.ocrctl("ocr", str(report), str(scan), "--pages", "0,2", "--format", "text", "-o", str(out),
                           "--jobs", "2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sorted(path.name for path in out.iterdir()) == ["report.txt", "scan.txt"]
    for name in ("report.txt", "scan.txt"):
        text = (out / name).read_text()
        pages = text.split("\f")  # a form feed between pages, as pdftotext writes them
        assert len(pages) == 2 and "<!--" not in text, text
        for page, lines in zip(pages, (PAGES[0], PAGES[2]), strict=True):
            assert char_accuracy("\n".join(lines), page) >= 0.9, text


def test_an_encrypted_pdf_is_one_line_and_the_other_file_still_comes_out(daemon, report, tmp_path):
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted_pdf())
    result = daemon.ocrctl("ocr", str(locked), str(report), "--pages", "1")
    assert result.returncode == 1
    assert result.stderr == (f"ocrctl: {locked}: the PDF is encrypted with a password: decrypt it first "
                             "(qpdf --decrypt --password=... IN.pdf OUT.pdf), then OCR OUT.pdf\n")
    header, _, markdown = result.stdout.partition("\n")
    assert header == f"==> {report} <=="
    (text,) = pages_of_markdown(markdown.strip() + "\n").values()
    assert char_accuracy("\n".join(PAGES[1]), text) >= 0.9, result.stdout


def test_an_api_error_for_a_pdf_is_the_apis_message_on_one_line(daemon, report):
    result = daemon.ocrctl("ocr", str(report), "--model", "no-such-model")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"ocrctl: {report}: model 'no-such-model' does not exist; ")
    assert result.stderr.count("\n") == 1


def test_pages_past_the_end_or_malformed(daemon, report):
    past = daemon.ocrctl("ocr", str(report), "--pages", "1-3")
    assert (past.returncode, past.stderr) == (
        1, f"ocrctl: {report}: --pages asks for page 3, but it has 3 pages (numbered from 0 to 2)\n")
    malformed = daemon.ocrctl("ocr", str(report), "--pages", "1,x")
    assert malformed.returncode == 2  # a usage error, before anything is read
    assert "'1,x' is not a list of page numbers and ranges like '0,2-4' (at 'x')" in malformed.stderr


def test_a_prompt_is_refused_for_a_pdf(daemon, report):
    result = daemon.ocrctl("ocr", str(report), "--prompt", "Read it.")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"ocrctl: {report}: --prompt is for images: ")


def test_several_inputs_need_a_directory_for_o(daemon, report, tmp_path):
    existing = tmp_path / "out.md"
    existing.write_text("mine")
    result = daemon.ocrctl("ocr", str(report), str(report), "-o", str(existing))
    assert (result.returncode, existing.read_text()) == (1, "mine")
    assert result.stderr.startswith(f"ocrctl: -o {existing} is a file, but 2 inputs need a directory")


def test_an_image_with_format_json_is_mistrals_page(daemon, tmp_path):
    image = tmp_path / "lines.png"
    image.write_bytes(render_text_image(PAGES[0]))
    result = daemon.ocrctl("ocr", str(image), "--format", "json", "-o", str(tmp_path / "lines.json"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    response = OCRResponse.model_validate_json((tmp_path / "lines.json").read_text())
    (page,) = response.pages
    assert page.index == 0 and char_accuracy("\n".join(PAGES[0]), page.markdown) >= 0.9


# --- how the pages of a PDF are sent and joined: a stand-in that answers /v1/ocr -----------------


class FakeOcrServer(FakeOpenAIServer):
    """Answers ``/v1/ocr`` with one page holding a figure, as ocrd numbers figures per request."""

    def answer(self, body):
        if "document" not in body:
            return super().answer(body)
        figure = {"id": "img-0.jpeg", "top_left_x": 1, "top_left_y": 2, "bottom_right_x": 3, "bottom_right_y": 4,
                  "image_base64": None}
        page = {"index": 0, "markdown": "A figure:\n\n![img-0.jpeg](img-0.jpeg)", "images": [figure],
                "dimensions": {"dpi": 200, "height": 10, "width": 10}, "tables": [], "hyperlinks": [],
                "header": None, "footer": None,
                "blocks": [{"type": "image", "content": "", "image_id": "img-0.jpeg"}]}
        return 200, {"pages": [page], "model": body["model"], "document_annotation": None,
                     "usage_info": {"pages_processed": 1, "doc_size_bytes": 1}}


async def test_each_page_goes_alone_and_figures_are_numbered_across_the_document(ocrctl, daemon_info, report):
    with FakeOcrServer() as server:
        daemon_info.http_url = server.url
        result = await ocrctl("ocr", str(report), "--pages", "1-2", "--format", "json")
    assert (result.rc, result.err) == (0, "")
    sent = [request.body["document"]["document_url"] for request in server.requests]
    assert all(request.path == "/v1/ocr" for request in server.requests)
    texts = []
    for url in sent:  # each a PDF of one page, cut from the document
        pdf = pypdfium2.PdfDocument(base64.b64decode(url.removeprefix("data:application/pdf;base64,")))
        assert len(pdf) == 1
        texts.append(pdf[0].get_textpage().get_text_range())
        pdf.close()
    assert sorted(" ".join(text.split()) for text in texts) == [" ".join(lines) for lines in PAGES[1:]]
    response = OCRResponse.model_validate(json.loads(result.out))
    assert [page.index for page in response.pages] == [1, 2]
    assert [[image.id for image in page.images] for page in response.pages] == [["img-0.jpeg"], ["img-1.jpeg"]]
    assert response.pages[1].markdown == "A figure:\n\n![img-1.jpeg](img-1.jpeg)"
    assert json.loads(result.out)["pages"][1]["blocks"][0]["image_id"] == "img-1.jpeg"
    assert response.model == PPOCR
