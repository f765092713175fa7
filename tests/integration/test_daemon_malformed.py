"""Malformed and oversized requests against a real ``ocrd serve``: each gets the right 4xx in
OpenAI's error envelope (never a 5xx, never a hang), no runner is started for any of them, and the
daemon goes on answering normal requests.

One daemon for the module, with small limits so that oversized inputs stay cheap to build.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import zlib

import pytest
from PIL import Image

from tests.support.daemon import assert_openai_error, ocr_messages, running_daemon
from tests.support.render import char_accuracy, data_url, render_text_image

MAX_BODY = 1_000_000
MAX_IMAGE = 150_000
MAX_IMAGES = 4
IMAGE_PARAM = "messages.0.content.0.image_url.url"


@pytest.fixture(scope="module")
def daemon():
    limits = {"max_body_bytes": MAX_BODY, "max_image_bytes": MAX_IMAGE,
              "max_images_per_request": MAX_IMAGES}
    with running_daemon({"limits": limits}) as running:
        yield running


@pytest.fixture(scope="module")
def http(daemon):
    with daemon.http(timeout=60) as client:
        yield client


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def decompression_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side white... er, black pixels: ~110 kB that inflate to ~110 MB
    of rows (and 900 megapixels once decoded)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def noise_png(side: int = 400) -> bytes:
    """A real PNG that does not compress: over MAX_IMAGE bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


def _chat(url: str, **extra) -> dict:
    return {"model": "ppocr",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            **extra}


SMALL = render_text_image(["ok"])
GOOD = data_url(SMALL)


# (name, request kwargs for httpx.post, status, expected param or None, words in the message)
CASES = [
    ("bad JSON", {"content": b'{"model": "ppocr", "messages": [', "headers": {"content-type": "application/json"}},
     400, None, "JSON"),
    ("JSON array body", {"json": [_chat(GOOD)]}, 400, None, "object"),
    ("bad base64", {"json": _chat("data:image/png;base64,@@not*base64@@")}, 400, IMAGE_PARAM, "base64"),
    ("text bytes labelled image/png",
     {"json": _chat("data:image/png;base64," + base64.b64encode(b"just some text, no image").decode())},
     400, IMAGE_PARAM, "image"),
    ("file:// URL", {"json": _chat("file:///etc/passwd")}, 400, IMAGE_PARAM, "file://"),
    ("http:// URL while remote images are off", {"json": _chat("http://example.com/page.png")},
     400, IMAGE_PARAM, "allow_remote_image_urls"),
    ("unknown model", {"json": {**_chat(GOOD), "model": "nosuch"}}, 404, "model", "nosuch"),
    ("missing messages", {"json": {"model": "ppocr"}}, 400, "messages", "required"),
    ("n = 2", {"json": _chat(GOOD, n=2)}, 400, "n", "n"),
    ("temperature NaN",
     {"content": json.dumps(_chat(GOOD))[:-1].encode() + b', "temperature": NaN}',
      "headers": {"content-type": "application/json"}}, 400, None, "NaN"),
    ("temperature -1", {"json": _chat(GOOD, temperature=-1)}, 400, "temperature", ""),
    ("too many images",
     {"json": {"model": "ppocr", "messages": ocr_messages(*[SMALL] * (MAX_IMAGES + 1))}},
     413, "messages", "max_images_per_request"),
]


@pytest.mark.parametrize(("request_kwargs", "status", "param", "words"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_malformed_request_gets_its_4xx_in_openai_shape(http, request_kwargs, status, param, words):
    response = http.post("/v1/chat/completions", **request_kwargs)
    error = assert_openai_error(response, status)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    assert words in error["message"], error


def test_image_over_max_image_bytes_gets_413(http):
    big = noise_png()
    assert MAX_IMAGE < len(big) and len(data_url(big)) < MAX_BODY
    error = assert_openai_error(http.post("/v1/chat/completions", json=_chat(data_url(big))), 413)
    assert "max_image_bytes" in error["message"] and error["param"] == IMAGE_PARAM


def test_decompression_bomb_gets_413_without_being_decoded(http):
    bomb = decompression_bomb()
    assert len(bomb) < MAX_IMAGE  # small on the wire: only its pixel count gives it away
    error = assert_openai_error(http.post("/v1/chat/completions", json=_chat(data_url(bomb))), 413)
    assert "30000x30000" in error["message"] and "max_image_pixels" in error["message"]


def test_declared_content_length_over_the_limit_is_refused_before_the_body_is_sent(daemon):
    # A client announcing 50 MB must not be made to upload it (or be left waiting) to learn it
    # is too much: the 413 comes back although not one byte of the body was sent.
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {50 * MAX_BODY}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as conn:
        conn.sendall(head.encode())
        received = b""
        try:
            while b"\r\n\r\n" not in received or not _complete(received):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pytest.fail(f"no answer within 30 s: the daemon waits for the body (got {received!r})")
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split()[1] == b"413", received
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert "max_body_bytes" in body["error"]["message"]


def test_a_client_still_uploading_an_oversized_body_can_finish_and_reuse_the_connection(daemon):
    total = 5 * MAX_BODY
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as conn:
        conn.sendall(head.encode() + b"x" * 65536)
        assert _read_response(conn).split(b" ", 2)[1] == b"413"
        # A client that does not read before it has sent everything (most do not) goes on.
        sent = 65536
        while sent < total:
            piece = min(256 * 1024, total - sent)
            conn.sendall(b"x" * piece)
            sent += piece
        conn.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n\r\n".encode())
        assert _read_response(conn).split(b" ", 2)[1] == b"200"


def _read_response(conn: socket.socket) -> bytes:
    received = b""
    while not _complete(received):
        chunk = conn.recv(65536)
        assert chunk, f"connection closed mid-response: {received!r}"
        received += chunk
    return received


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def test_unknown_route_gets_404_in_openai_shape(http):
    error = assert_openai_error(http.get("/v1/nothing/here"), 404)
    assert "/v1/nothing/here" in error["message"]


def test_after_all_of_that_no_runner_was_started_and_a_normal_request_works(daemon, http):
    # Every malformed request was refused by the daemon itself, before any model was loaded.
    assert daemon.runner_pids() == [] and daemon.ps() == {}
    response = http.post("/v1/chat/completions",
                         json={"model": "ppocr", "messages": ocr_messages(render_text_image(["still fine"]))})
    assert response.status_code == 200, response.text
    assert char_accuracy("still fine", response.json()["choices"][0]["message"]["content"]) >= 0.9
