"""``is_whole``: PNG and JPEG files judged whole from their structure, never more than decoding
would accept (whatever it cannot prove whole, the caller decodes)."""

from __future__ import annotations

import io
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ocrd.http.image_files import is_whole


def encoded(fmt: str, size: tuple[int, int] = (90, 70)) -> bytes:
    """The same noise every time (hypothesis replays examples)."""
    pixels = random.Random(size[0] * size[1]).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:
        return False
    return True


def png_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    return out


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_whole_files_are_whole(fmt):
    assert is_whole(encoded(fmt), fmt)
    assert is_whole(encoded(fmt, (1200, 900)), fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_file_cut_short_anywhere_is_not(fmt):
    data = encoded(fmt)
    for cut in range(0, len(data) - 1, 7):
        assert not is_whole(data[:cut], fmt), cut


def test_a_png_with_a_byte_changed_anywhere_is_not():
    data = encoded("PNG")
    for offset in range(8, len(data), 11):  # past the signature: every chunk's bytes have a CRC
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        assert not is_whole(bytes(damaged), "PNG"), offset


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_png_judged_whole_decodes(data):
    """Never more than decoding accepts: cut or damaged PNGs that pass, decode. (A JPEG decoder
    reads damaged entropy-coded data as other pixels; the JPEG check is about files cut short.)"""
    raw = bytearray(encoded("PNG", (40, 30)))
    cut = data.draw(st.integers(0, len(raw)))
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    candidate = bytes(raw[:cut])
    if is_whole(candidate, "PNG"):
        assert decodes(candidate)


def test_other_formats_and_unusual_files_are_left_to_the_decoder():
    assert not is_whole(encoded("WEBP"), "WEBP")
    assert not is_whole(encoded("GIF"), "GIF")
    assert not is_whole(encoded("JPEG") + b"trailer", "JPEG")  # decoded, as before
    ihdr = (30).to_bytes(4, "big") + (20).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    assert not is_whole(png_chunks([(b"IHDR", ihdr), (b"IEND", b"")]), "PNG")  # no image data
    assert not is_whole(png_chunks([(b"IDAT", b""), (b"IHDR", ihdr), (b"IEND", b"")]), "PNG")


def test_a_png_in_very_many_chunks_is_left_to_the_decoder():
    """A chunk walk in Python costs per chunk: a file of tiny chunks (a way to make the check
    slow) is decoded instead, as every image was before."""
    data = encoded("PNG")
    start = data.index(b"IDAT") - 4
    length = int.from_bytes(data[start:start + 4], "big")
    stream = data[start + 8:start + 8 + length]
    ihdr_end = data.index(b"IDAT") - 4
    pieces = [(b"IDAT", stream[i:i + 1]) for i in range(len(stream))]
    many = data[:ihdr_end] + png_chunks(pieces)[8:] + png_chunks([(b"IEND", b"")])[8:]
    assert decodes(many) and len(pieces) > 64 + len(many) // 4096
    assert not is_whole(many, "PNG")
    few = data[:ihdr_end] + png_chunks([(b"IDAT", stream[:100]), (b"IDAT", stream[100:])])[8:] \
        + png_chunks([(b"IEND", b"")])[8:]
    assert is_whole(few, "PNG") and decodes(few)
