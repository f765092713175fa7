"""Hostile input at the parsers, before any transport (ocrd.model_ids, the JSON body parser,
ocrd.http.images, the cache's refs): each is refused with a 4xx ``OcrdError`` that says what is
wrong, and nothing shaped like a path reaches the file system.

The transports are tested with the same inputs against a real ``ocrd serve``
(tests/integration/test_daemon_hostile.py) and a real gRPC server
(tests/integration/test_hostile_control.py).
"""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest
from PIL import Image

from ocrd.cache.inventory import point_ref, read_ref
from ocrd.catalog import Catalog
from ocrd.config.settings import LimitsSettings, Settings
from ocrd.errors import ConfigError, InvalidRequest, PayloadTooLarge
from ocrd.http.images import RemoteFetcher, prepare_images
from ocrd.http.json_body import JsonLimits, parse_json_body
from ocrd.http.openai.protocol import parse_chat_request
from ocrd.model_ids import check_model_name, check_revision, is_model_id
from tests.support.local_image_server import local_image_server
from tests.support.openapi import validate

PATH_LIKE_NAMES = [
    "../x", "../../etc/passwd", "a/../b", "org/..", "..", "/etc/passwd", "/abs/olute", "a/b/c",
    "a\\b", "..\\..\\x", "a\x00b", "a/b\x00", "a\nb", "a b", " ppocr", "ppocr ", "é/ñ", "a--b/c",
    "x.git", "a" * 97, "org/" + "n" * 97, "-x", "x-", ".x", "org/.x", "%2e%2e/x", "~/x", "a//b",
]  # fmt: skip


def refused(call, *args, kind=InvalidRequest, **kwargs):
    with pytest.raises(kind) as info:
        call(*args, **kwargs)
    error = info.value
    assert type(error) is kind
    assert 400 <= error.http_status < 500
    validate("ErrorResponse", error.to_openai())
    return error


# --- model names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATH_LIKE_NAMES)
def test_path_like_model_names_are_invalid_requests_naming_the_field(name):
    assert not is_model_id(name)
    error = refused(check_model_name, name, param="model")
    assert error.param == "model"
    assert error.grpc_code == "INVALID_ARGUMENT"
    assert "not a valid model name" in error.message


def test_every_catalog_id_and_alias_is_a_valid_model_name():
    names = [name for entry in Catalog.load_default().entries() for name in (entry.id, *entry.aliases)]
    assert len(names) > 40
    for name in names:
        assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["dots.ocr:layout", "builtin/ppocr:ocr", "org/name:v1.2_x"])
def test_a_preset_suffix_is_allowed_where_requests_take_one(name):
    assert check_model_name(name, allow_preset=True) == name
    refused(check_model_name, name)  # not where no preset can follow (gRPC, cache)


@pytest.mark.parametrize("name", ["ppocr:../x", "ppocr:a/b", "ppocr:a\x00", "../x:layout"])
def test_a_preset_suffix_cannot_smuggle_a_path(name):
    refused(check_model_name, name, allow_preset=True)


def test_an_empty_model_name_says_one_is_required():
    assert "required" in refused(check_model_name, "").message


@pytest.mark.parametrize("revision", ["", "main", "v1.0", "refs/pr/1", "0" * 40, "release_2-b"])
def test_revisions_that_git_and_the_hub_use_pass(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision",
    ["../x", "a/../../b", "/abs", "a//b", "a/", "a\\b", "x\x00", "main.lock", "a b", "r" * 256],
)  # fmt: skip
def test_path_like_revisions_are_refused(revision):
    assert refused(check_revision, revision).param == "revision"


def test_cache_refs_cannot_point_outside_the_repo(tmp_path):
    hub = tmp_path / "hub"
    (tmp_path / "secret").write_text("not a commit")
    refused(read_ref, hub, "org/name", "../../../secret")
    refused(point_ref, hub, "org/name", "../../../../planted", "0" * 40)
    assert not (tmp_path / "planted").exists()
    point_ref(hub, "org/name", "refs/pr/1", "1" * 40)  # a legitimate nested ref still works
    assert read_ref(hub, "org/name", "refs/pr/1") == "1" * 40


@pytest.mark.parametrize("model", ["a/b/c", "../x", "a--b/c", "é/ñ"])
def test_upstream_model_names_follow_the_same_rule(model):
    with pytest.raises(ConfigError) as info:
        from ocrd.config.loading import load_settings

        load_settings(None, {"upstreams": [{"model": model, "url": "http://host/v1"}]})
    assert "upstreams.0.model" in info.value.message


# --- a trailing control character ---------------------------------------------------------------
# A pattern that ends in "$" also matches before a final "\n": "ppocr\n" would pass as "ppocr".

TRAILING_CONTROLS = ["\n", "\r\n", "\t", "\r", "\x00"]


@pytest.mark.parametrize("tail", TRAILING_CONTROLS)
@pytest.mark.parametrize("name", ["ppocr", "builtin/ppocr", "dots.ocr"])
def test_a_model_name_with_a_trailing_control_character_is_invalid(name, tail):
    assert is_model_id(name) and not is_model_id(name + tail)
    assert "not a valid model name" in refused(check_model_name, name + tail).message
    refused(check_model_name, name + tail, allow_preset=True)


@pytest.mark.parametrize("tail", TRAILING_CONTROLS)
def test_a_preset_or_revision_with_a_trailing_control_character_is_invalid(tail):
    assert "not a valid preset name" in refused(check_model_name, "dots.ocr:layout" + tail,
                                                allow_preset=True).message
    assert refused(check_revision, "main" + tail).param == "revision"
    assert refused(check_revision, "0" * 40 + tail).param == "revision"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"http": {"cors_origins": ["https://app.example.com\n"]}}, "http.cors_origins"),
     ({"http": {"api_keys": [{"name": "app", "hash": "sha256:" + "0" * 64 + "\n"}]}},
      "http.api_keys.0.hash"),
     ({"upstreams": [{"model": "a/b", "url": "http://host/v1", "api_key_env": "KEY\n"}]},
      "upstreams.0.api_key_env"),
     ({"transformers": {"device": "cpu\n"}}, "transformers.device"),
     ({"vllm": {"instance": "gpu1\n"}}, "vllm.instance")],
)  # fmt: skip
def test_settings_with_a_trailing_newline_are_refused_naming_the_key(overrides, key):
    from ocrd.config.loading import load_settings

    with pytest.raises(ConfigError) as info:
        load_settings(None, overrides)
    assert info.value.message.startswith(key), info.value.message


def test_runner_options_with_a_trailing_newline_are_refused():
    from ocrd.worker.engines import EngineOptionsError
    from ocrd.worker.transformers_options import find_snapshot, parse_options

    with pytest.raises(EngineOptionsError, match="'device'"):
        parse_options({"repo_id": "org/name", "device": "cuda:0\n"})
    # Not a commit, so looked up as a ref (there is none): never a snapshot named "<hash>\n".
    assert find_snapshot("/nonexistent", "org/name", "0" * 40 + "\n").commit is None


def test_a_catalog_preset_name_with_a_trailing_newline_is_refused():
    from ocrd.catalog.presets import parse_presets

    with pytest.raises(ValueError, match="preset names"):
        parse_presets("org/name", {"ocr\n": {"prompt": "Read it."}}, {})


# --- JSON bodies ------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """``{"model": "m", "x": [[...]]}`` whose deepest array sits at ``depth`` (the body is 1)."""
    return b'{"model": "m", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_up_to_the_limit_passes_and_one_more_level_is_refused():
    assert parse_json_body(nested(64), JsonLimits(max_depth=64))["model"] == "m"
    error = refused(parse_json_body, nested(65), JsonLimits(max_depth=64))
    assert "more than 64 levels" in error.message and "limits.max_json_depth" in error.message
    assert Settings().limits.max_json_depth == 64


@pytest.mark.parametrize("depth", [1_000, 100_000, 2_000_000])
def test_pathologically_deep_bodies_are_refused_without_overflowing_the_stack(depth):
    refused(parse_json_body, b"[" * depth + b"]" * depth)
    refused(parse_json_body, b'{"a":' * depth + b"1" + b"}" * depth)
    refused(parse_json_body, b'{"x": ' + b"[" * depth)  # unterminated


@pytest.mark.parametrize(
    "body",
    [b'{"model": "\xff\xfe"}', b'{"model": "\xc3"}', b"\xef\xbb\xbf\xff{}", b'{"model": "\xed\xa0\x80"}'],
)  # fmt: skip
def test_bodies_that_are_not_utf8_are_refused(body):
    assert "not valid UTF-8" in refused(parse_json_body, body).message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_json_in_other_unicode_encodings_is_refused(encoding):
    assert "not valid UTF-8" in refused(parse_json_body, '{"model": "m"}'.encode(encoding)).message


@pytest.mark.parametrize("escaped", ['"\\ud800"', '"a\\udfffb"', '{"\\ud83d": 1}'])
def test_lone_surrogate_escapes_are_refused_anywhere(escaped):
    body = ('{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": '
            + escaped + "}]}]}").encode()
    assert "surrogate" in refused(parse_json_body, body).message


def test_a_paired_surrogate_escape_is_just_an_emoji():
    assert parse_json_body(b'{"model": "m", "t": "\\ud83d\\ude00"}')["t"] == "\U0001F600"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens", "seed", "vendor.knob"])
def test_non_finite_numbers_are_refused_anywhere(constant, field):
    outer, _, inner = field.partition(".")
    value = f'{{"{inner}": {constant}}}' if inner else constant
    body = f'{{"model": "m", "messages": [], "{outer}": {value}}}'.encode()
    error = refused(parse_json_body, body)
    assert error.param == field


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", 10**30), ("max_tokens", 0), ("max_tokens", -1), ("max_completion_tokens", 10**7),
     ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0), ("top_p", -1), ("seed", 2**64),
     ("seed", -(2**63) - 1), ("n", 0), ("n", -5), ("max_tokens", 1.5), ("max_tokens", "10"),
     ("max_tokens", True)],
)  # fmt: skip
def test_out_of_range_numbers_are_refused_naming_the_field(field, value):
    raw = {"model": "m", "messages": [{"role": "user", "content": "x"}], field: value}
    assert refused(parse_chat_request, raw).param == field


def test_integers_longer_than_python_parses_are_invalid_json_not_a_crash():
    body = b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b"}"
    assert "not valid JSON" in refused(parse_json_body, body).message


# --- images -----------------------------------------------------------------------------------


def encoded(fmt: str, size=(160, 120), **options) -> bytes:
    noisy = Image.effect_noise(size, 60).convert("RGB")  # noise: the data does not compress away
    buffer = io.BytesIO()
    noisy.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def chat(data: bytes, mime: str = "image/png"):
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return parse_chat_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]})


async def prepared(data: bytes, mime: str = "image/png", limits: LimitsSettings | None = None):
    return await prepare_images(chat(data, mime), limits or LimitsSettings(), False)


async def refused_image(data: bytes, kind=InvalidRequest, limits: LimitsSettings | None = None):
    with pytest.raises(kind) as info:
        await prepared(data, limits=limits)
    assert type(info.value) is kind
    validate("ErrorResponse", info.value.to_openai())
    return info.value


FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
async def test_truncated_images_of_every_format_are_refused(fmt, keep):
    data = encoded(fmt)
    error = await refused_image(data[: int(len(data) * keep)])
    assert error.message == "image 1 is truncated or corrupt; check that the whole file was sent"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_images_with_a_corrupted_middle_are_refused_or_decode(fmt):
    # Flipped bytes in the pixel data may still decode (to other pixels): what matters is that
    # the answer is either a validated image or a 400, never another exception.
    data = bytearray(encoded(fmt))
    for offset in range(len(data) // 3, len(data) // 3 + 64):
        data[offset] ^= 0xA5
    try:
        [image] = await prepared(bytes(data))
    except InvalidRequest as error:
        assert error.http_status == 400
    else:
        assert (image.width, image.height) == (160, 120)


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "BMP", "WEBP"])
async def test_huge_declared_sizes_are_refused_from_the_header(fmt):
    limits = LimitsSettings(max_image_pixels=100 * 100)
    error = await refused_image(encoded(fmt, size=(101, 100)), PayloadTooLarge, limits=limits)
    assert "101x100 = 10100 pixels" in error.message


def tiff_declaring(width: int, height: int) -> bytes:
    """A few dozen bytes of little-endian TIFF whose header declares ``width`` x ``height``."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8 + 0) + ifd + b"\x00\x00\x00\x00"


async def test_a_tiff_bomb_is_refused_before_decoding():
    error = await refused_image(tiff_declaring(60_000, 60_000), PayloadTooLarge)
    assert "limits.max_image_pixels" in error.message


async def test_a_jpeg_labelled_png_is_accepted_and_reported_as_jpeg():
    # Decision (docs/hardening.md): the bytes decide, the label does not; runners sniff too.
    [image] = await prepared(encoded("JPEG"), mime="image/png")
    assert (image.format, image.mime) == ("JPEG", "image/jpeg")


@pytest.mark.parametrize("mime", ["text/html", "application/octet-stream", "", "image"])
async def test_a_data_url_that_does_not_say_image_is_refused(mime):
    with pytest.raises(InvalidRequest):
        await prepared(encoded("PNG"), mime=mime)


# --- remote images: addresses written in the forms resolvers accept ------------------------------


@pytest.fixture
def loopback():
    with local_image_server() as server:
        yield server


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0",
                                  "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost."])
async def test_numeric_and_mapped_forms_of_loopback_are_refused(loopback, host):
    # The real system resolver: what a name or number resolves to is what is judged.
    with pytest.raises(InvalidRequest) as info:
        await RemoteFetcher().fetch(f"http://{host}:{loopback.port}/x.png", max_bytes=10_000,
                                    what="image 1", param="p")
    # Refused as loopback, or (forms httpx will not parse) as no valid URL: never fetched.
    assert any(words in info.value.message for words in (
        "ocrd only fetches images from public addresses", "could not be resolved", "not a valid URL"))
    assert loopback.requests == 0


def test_nothing_here_writes_to_the_log_what_it_refused(caplog):
    # A refused name may be long or binary: messages shorten it and escape it (repr).
    error = refused(check_model_name, "x" * 5000 + "\x00")
    assert len(error.message) < 400 and "\x00" not in error.message
    assert json.dumps(error.to_openai())
