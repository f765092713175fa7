"""The pure parts of the runner: line grouping, word limits, stream pieces, request parsing."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from ocrd.errors import InvalidRequest
from ocrd.worker.builtin_worker import apply_limits, count_words, create_engine, split_lines
from ocrd.worker.chat_input import chat_input, decode_image, generation_params, parse_request
from ocrd.worker.engines import EngineOptionsError
from ocrd.worker.ocr_backends import TextBox, debian_package, group_lines
from tests.support.render import data_url, render_text_image


def test_boxes_on_one_baseline_form_one_line_left_to_right():
    boxes = [
        TextBox("world", left=200, top=12, bottom=40),
        TextBox("second", left=10, top=80, bottom=110),
        TextBox("hello", left=10, top=10, bottom=38),
        TextBox("line", left=150, top=83, bottom=108),
    ]
    assert group_lines(boxes) == ["hello world", "second line"]


def test_boxes_that_barely_touch_vertically_are_separate_lines():
    boxes = [TextBox("upper", 0, 0, 30), TextBox("lower", 0, 25, 55)]  # 5 px of 30 overlap
    assert group_lines(boxes) == ["upper", "lower"]


def test_limits_cut_at_stop_then_after_words():
    text = "one two\nthree four\n\nfive"
    assert apply_limits(text, None, ()) == (text, "stop")
    assert apply_limits(text, 3, ()) == ("one two\nthree", "length")
    assert apply_limits(text, 5, ()) == (text, "stop")  # exactly the limit is a natural stop
    assert apply_limits(text, None, ("four", "two")) == ("one ", "stop")
    assert apply_limits(text, 1, ("four",)) == ("one", "length")
    assert apply_limits(text, 10, ("",)) == (text, "stop")  # an empty stop string matches nothing


def test_stream_pieces_are_lines_and_join_back_exactly():
    for text in ["a b\nc\n\nd", "", "single", "x\n"]:
        pieces = split_lines(text)
        assert "".join(pieces) == text
        assert all(piece for piece in pieces)
    assert split_lines("a\n\nb") == ["a\n", "\n", "b"]
    assert count_words(" a  b\n\nc ") == 3


def test_request_parsing_reports_the_offending_field():
    with pytest.raises(InvalidRequest) as bad_json:
        parse_request(b"{not json")
    assert "not valid JSON" in bad_json.value.message
    with pytest.raises(InvalidRequest) as bad_n:
        parse_request(json.dumps({"n": 3, "messages": [{"role": "user", "content": "x"}]}).encode())
    assert bad_n.value.param == "n"
    with pytest.raises(InvalidRequest) as bad_max:
        parse_request(json.dumps({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}).encode())
    assert bad_max.value.param == "max_tokens"


def test_only_the_last_user_message_gives_images_but_all_text_counts():
    old, new = render_text_image(["old"]), render_text_image(["new", "two"])
    body = {
        "messages": [
            {"role": "system", "content": "You read text."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(old)}}]},
            {"role": "assistant", "content": "old"},
            {"role": "user", "content": [{"type": "text", "text": "and this"},
                                         {"type": "image_url", "image_url": {"url": data_url(new)}}]},
        ],
        "stop": "x",
        "max_completion_tokens": 7,
    }
    request = parse_request(json.dumps(body).encode())
    chat = chat_input(request)
    assert len(chat.images) == 1 and chat.images[0].mode == "RGB"
    assert chat.prompt == "and this"
    assert sum(count_words(t) for t in chat.all_text) == 6
    assert generation_params(request).stop == ("x",) and generation_params(request).max_tokens == 7


def test_builtin_options_are_checked_before_loading():
    with pytest.raises(EngineOptionsError, match="unknown builtin backend"):
        create_engine("m", {"backend": "easyocr"})
    with pytest.raises(EngineOptionsError, match="psm"):
        create_engine("m", {"backend": "tesseract", "psm": 99})
    with pytest.raises(EngineOptionsError, match="languages"):
        create_engine("m", {"backend": "tesseract", "languages": "eng+"})
    assert debian_package("chi_sim") == "tesseract-ocr-chi-sim"


def _encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_runner_images_come_upright_and_rgb_whatever_they_were():
    # EXIF orientation 6: the camera was turned; the stored 40x20 pixels show a 20x40 picture.
    exif = Image.Exif()
    exif[0x0112] = 6
    wide = Image.new("RGB", (40, 20), "red")
    turned = decode_image(data_url(_encoded(wide, "JPEG", exif=exif), "image/jpeg"), "p")
    assert turned.size == (20, 40) and turned.mode == "RGB"
    # Transparent areas become white, grey and palette images RGB, an RGB image stays as it is.
    clear = decode_image(data_url(_encoded(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG")), "p")
    assert clear.mode == "RGB" and clear.getpixel((3, 3)) == (255, 255, 255)
    for mode, colour in (("L", 90), ("P", 3), ("RGB", (1, 2, 3))):
        image = decode_image(data_url(_encoded(Image.new(mode, (8, 8), colour), "PNG")), "p")
        assert image.mode == "RGB" and image.size == (8, 8)
    assert image.getpixel((0, 0)) == (1, 2, 3)


def test_runner_base64_may_be_line_wrapped_but_must_be_base64():
    png = _encoded(Image.new("RGB", (8, 8), "blue"), "PNG")
    url = data_url(png)
    header, payload = url.split(",", 1)
    wrapped = header + "," + "\n".join(payload[i:i + 16] for i in range(0, len(payload), 16))
    assert decode_image(wrapped, "p").getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(InvalidRequest, match="not valid base64"):
        decode_image(header + ",%%%" + payload, "p")
    with pytest.raises(InvalidRequest, match="not a decodable image"):
        decode_image(header + "," + base64.b64encode(png[:40]).decode(), "p")
