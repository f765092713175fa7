"""Hostile input against a real ``ocrd serve`` whose model is already loaded: path-like model ids
and ids with a trailing control character on every HTTP route, paths with control characters,
deep and non-UTF-8 JSON, non-finite and huge numbers, truncated images of every format, a JPEG
labelled PNG, and (with ``http.allow_remote_image_urls`` on) image URLs that point at loopback,
private, link-local and IPv4-mapped addresses. Each gets its 4xx in OpenAI's error shape;
afterwards no 5xx was answered, nothing was logged as unhandled, and the same runner (same pid)
still does OCR.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
import zlib

import pytest
from PIL import Image

from ocrd.http.image_files import is_whole
from tests.support.daemon import assert_openai_error, ocr_messages, running_daemon
from tests.support.render import char_accuracy, data_url, render_text_image

JSON = {"content-type": "application/json"}
HOSTILE_MODELS = ["../../etc/passwd", "/etc/passwd", "a/../b", "a\\b", "a\x00b", "é/ñ", "a--b/c",
                  "a/b/c", "org/..", "x" * 300,
                  # A trailing control character: Starlette's route pattern ends in "$", which
                  # matched "/v1/models/ppocr%0A" as if it were "/v1/models/ppocr".
                  "ppocr\n", "ppocr\r\n", "ppocr\t", "builtin/ppocr\n"]  # fmt: skip
STATUSES: list[int] = []


@pytest.fixture(scope="module")
def daemon():
    config = {"http": {"allow_remote_image_urls": True},
              "limits": {"max_json_depth": 16, "max_image_pixels": 4_000_000}}
    with running_daemon(config) as running:
        yield running


@pytest.fixture(scope="module")
def http(daemon):
    with daemon.http(timeout=120) as client:
        original = client.request

        def recording(*args, **kwargs):
            response = original(*args, **kwargs)
            STATUSES.append(response.status_code)
            return response

        client.request = recording  # every answer of this module is checked for 5xx at the end
        yield client


@pytest.fixture(scope="module")
def runner_pid(daemon, http):
    response = http.post("/models/load", json={"model": "ppocr"})
    assert response.status_code == 200, response.text
    return response.json()["pid"]


def chat(content, **extra) -> dict:
    return {"model": "ppocr", "messages": [{"role": "user", "content": content}], **extra}


def image_part(url: str) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": url}}]


def noise(fmt: str, size=(120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_path_like_model_ids_are_400_on_every_route(http, runner_pid, model):
    answers = [
        http.post("/v1/chat/completions", json=chat("hi", model=model)),
        http.post("/models/load", json={"model": model}),
        http.post("/models/unload", json={"model": model}),
    ]
    for response in answers:
        error = assert_openai_error(response, 400)
        assert error["param"] == "model" and "not a valid model name" in error["message"], error
    error = assert_openai_error(http.get("/v1/models/" + urllib.parse.quote(model, safe="")), 400)
    if any(ord(char) < 0x20 for char in model):  # refused before routing, for every path
        assert "the request path has a control character" in error["message"], error
    else:
        assert error["param"] == "model" and "not a valid model name" in error["message"], error


@pytest.mark.parametrize("path", ["/health%0A", "/v1/models%0A", "/v1/chat/completions%0A",
                                  "/v1/models/ppocr%00", "/metrics%7F"])
def test_a_path_with_a_control_character_is_400_on_every_route(http, path):
    for method in ("GET", "POST"):
        error = assert_openai_error(http.request(method, path, json={"model": "ppocr"}), 400)
        assert "the request path has a control character" in error["message"], error


@pytest.mark.parametrize(
    ("body", "words"),
    [(b'{"model": "ppocr", "x": ' + b"[" * 16 + b"]" * 16 + b"}", "levels deep"),
     (b"[" * 200_000 + b"]" * 200_000, "levels deep"),
     (b'{"model": "pp\xff\xfeocr", "messages": []}', "UTF-8"),
     ('{"model": "ppocr"}'.encode("utf-16"), "UTF-8"),
     (b'{"model": "ppocr", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
     (b'{"model": "ppocr", "messages": [], "temperature": NaN}', "NaN"),
     (b'{"model": "ppocr", "messages": [], "top_p": -Infinity}', "NaN and infinite"),
     (b'{"model": "ppocr", "messages": [], "max_tokens": 1e999}', "NaN and infinite"),
     (b'{"model": "ppocr", "messages": [], "max_tokens": ' + b"9" * 5000 + b"}", "JSON")],
)  # fmt: skip
def test_hostile_json_is_400(http, runner_pid, body, words):
    error = assert_openai_error(http.post("/v1/chat/completions", content=body, headers=JSON), 400)
    assert words in error["message"], error


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 10**12), ("max_tokens", -1), ("max_tokens", 0), ("temperature", -1e308),
     ("seed", 2**70), ("top_p", 0), ("n", 2)],
)  # fmt: skip
def test_out_of_range_numbers_are_400_naming_the_field(http, runner_pid, field, value):
    response = http.post("/v1/chat/completions", json=chat("hi", **{field: value}))
    assert assert_openai_error(response, 400)["param"] == field


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
def test_truncated_images_are_400(http, runner_pid, fmt):
    data = noise(fmt)
    url = data_url(data[: len(data) // 2], mime=f"image/{fmt.lower()}")
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat(image_part(url))), 400)
    assert error["param"] == "messages.0.content.0.image_url.url"


def test_a_png_whole_in_structure_with_damaged_data_inside_is_400_from_the_runner(http, runner_pid, daemon):
    """The daemon judges a PNG by its chunks (ocrd.http.image_files) and leaves decoding to the
    runner: one built to pass that (damage inside its compressed data, every CRC recomputed) is
    refused by the runner's decoder with a 400 naming the image, and the runner lives on."""
    data = bytearray(noise("PNG"))
    start = data.index(b"IDAT") + 4 + 40
    data[start:start + 200] = bytes(200)  # inside the zlib stream: deflate cannot read it
    length = int.from_bytes(data[data.index(b"IDAT") - 4:data.index(b"IDAT")], "big")
    crc_at = data.index(b"IDAT") + 4 + length
    data[crc_at:crc_at + 4] = zlib.crc32(data[data.index(b"IDAT"):crc_at]).to_bytes(4, "big")
    assert is_whole(bytes(data), "PNG")
    url = data_url(bytes(data), mime="image/png")
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat(image_part(url))), 400)
    assert "image" in error["message"] and "decod" in error["message"], error
    assert daemon.ps()["builtin/ppocr"]["pid"] == runner_pid


def test_a_pixel_bomb_is_413(http, runner_pid):
    buffer = io.BytesIO()
    Image.new("1", (3000, 3000)).save(buffer, format="TIFF", compression="group4")
    assert len(buffer.getvalue()) < 10_000  # 9 megapixels in a few kilobytes
    url = "data:image/tiff;base64," + base64.b64encode(buffer.getvalue()).decode()
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat(image_part(url))), 413)
    assert "limits.max_image_pixels" in error["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                  "[::ffff:127.0.0.1]:{port}", "2130706433:{port}", "10.0.0.1",
                                  "192.168.1.1", "169.254.169.254", "[fe80::1]", "224.0.0.1",
                                  "[::ffff:10.1.2.3]"])
def test_image_urls_to_non_public_addresses_are_400_even_when_fetching_is_on(daemon, http, runner_pid,
                                                                          host):
    url = f"http://{host.format(port=daemon.port)}/health"
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat(image_part(url))), 400)
    assert "public addresses" in error["message"], error


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "[::1]:{port}", "10.0.0.1", "169.254.169.254"])
@pytest.mark.parametrize("kind", ["document_url", "image_url"])
def test_document_urls_to_non_public_addresses_are_400_even_when_fetching_is_on(daemon, http, runner_pid,
                                                                             host, kind):
    url = f"http://{host.format(port=daemon.port)}/health"
    body = {"model": "ppocr", "document": {"type": kind, kind: url}}
    error = assert_openai_error(http.post("/v1/ocr", json=body), 400)
    assert "public addresses" in error["message"], error


def test_a_jpeg_labelled_png_is_read_by_its_bytes(http, runner_pid):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(render_text_image(["labels lie"]))).convert("RGB").save(
        buffer, format="JPEG", quality=95)
    url = data_url(buffer.getvalue(), mime="image/png")
    response = http.post("/v1/chat/completions", json=chat(image_part(url)))
    assert response.status_code == 200, response.text
    assert char_accuracy("labels lie", response.json()["choices"][0]["message"]["content"]) >= 0.8


def test_afterwards_the_same_runner_serves_and_nothing_was_a_5xx(daemon, http, runner_pid):
    response = http.post("/v1/chat/completions",
                         json={"model": "ppocr", "messages": ocr_messages(render_text_image(["still here"]))})
    assert response.status_code == 200, response.text
    assert char_accuracy("still here", response.json()["choices"][0]["message"]["content"]) >= 0.9
    assert daemon.ps()["builtin/ppocr"]["pid"] == runner_pid
    assert len(STATUSES) > 60 and all(status < 500 for status in STATUSES), STATUSES
    log = daemon.stderr()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert json.loads(http.get("/health").text)["status"] == "ok"
