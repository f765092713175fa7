"""Images in chat requests: what passes, what is refused and how (ocrd.http.images).

Images are made here with Pillow; remote fetching runs against a real local HTTP server (refused
as loopback) and a real FastAPI app reached through httpx's ASGI transport, with a resolver that
gives its host a public-looking address. Nothing goes to the internet.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import struct
import zlib

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from PIL import Image

from ocrd.config.settings import LimitsSettings
from ocrd.errors import InvalidRequest, OcrdError, PayloadTooLarge
from ocrd.http.images import (
    RemoteFetcher,
    forward_payload,
    non_public_kind,
    prepare_images,
    system_resolver,
)
from ocrd.http.openai.protocol import parse_chat_request
from tests.support.local_image_server import local_image_server
from tests.support.openapi import validate

LIMITS = LimitsSettings()
PUBLIC_IP = "93.184.216.34"


def encode(fmt: str, size: tuple[int, int] = (40, 20), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white").save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat(*urls: str, text: str | None = "Read it."):
    content = [{"type": "text", "text": text}] if text else []
    content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return parse_chat_request({"model": "m", "messages": [{"role": "user", "content": content}]})


async def refused(request, kind: type[OcrdError] = InvalidRequest, limits=LIMITS, **kw):
    with pytest.raises(kind) as info:
        await prepare_images(request, limits, kw.pop("allow_remote", False), **kw)
    error = info.value
    assert type(error) is kind
    validate("ErrorResponse", error.to_openai())
    return error


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
     ("TIFF", "image/tiff"), ("BMP", "image/bmp"), ("GIF", "image/gif")],
)  # fmt: skip
async def test_each_supported_format_passes_with_its_facts(fmt, mime):
    data = encode(fmt)
    url = data_url(data, mime)
    [image] = await prepare_images(chat(url), LIMITS, allow_remote=False)
    assert (image.format, image.mime, image.width, image.height) == (fmt, mime, 40, 20)
    assert image.nbytes == len(data) and image.source == "data"
    assert image.url == url  # forwarded unchanged
    assert image.ref.param == "messages.0.content.1.image_url.url"


async def test_text_only_request_has_no_images_and_no_error():
    assert await prepare_images(chat(), LIMITS, allow_remote=False) == []


async def test_wrong_mime_is_accepted_and_the_real_format_reported():
    url = data_url(encode("JPEG"), "image/png")
    [image] = await prepare_images(chat(url), LIMITS, allow_remote=False)
    assert image.format == "JPEG" and image.mime == "image/jpeg"
    assert image.url == url


async def test_images_are_numbered_across_messages_and_params_point_at_the_part():
    raw = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(encode("PNG"))}}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "and this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
        ],
    }  # fmt: skip
    error = await refused(parse_chat_request(raw))
    assert error.param == "messages.2.content.1.image_url.url"
    assert error.message.startswith("image 2 ")


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "FILE:///etc/passwd", "file://host/share/a.png"]
)
async def test_file_urls_are_never_accepted(url):
    error = await refused(chat(url), allow_remote=True)
    assert "file:// URLs are never accepted; send the image as a data: URL" in error.message
    assert error.param == "messages.0.content.1.image_url.url"


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "/tmp/a.png", "gopher:x"])
async def test_other_schemes_are_refused(url):
    error = await refused(chat(url), allow_remote=True)
    assert "not accepted; send the image as a data: URL" in error.message


async def test_scheme_problems_are_found_before_any_image_is_decoded():
    error = await refused(chat("data:image/png;base64,AAAA", "file:///x.png"))
    assert error.message.startswith("image 2: file://")


async def test_http_url_when_remote_is_off_names_the_setting():
    error = await refused(chat("https://example.com/a.png"), allow_remote=False)
    assert "http.allow_remote_image_urls" in error.message
    assert "data: URL" in error.message


async def test_non_image_mime_is_refused():
    error = await refused(chat(data_url(encode("PNG"), "text/plain")))
    assert "'text/plain'" in error.message and "image/*" in error.message


@pytest.mark.parametrize(
    "url", ["data:image/png,rawbytes", "data:image/png;base64", "data:;base64,AAAA"]
)
async def test_data_url_must_be_base64_with_an_image_type(url):
    error = await refused(chat(url))
    assert error.param == "messages.0.content.1.image_url.url"


@pytest.mark.parametrize(
    "payload_edit",
    [
        lambda p: p[:10] + "!" + p[11:],  # outside the alphabet
        lambda p: p[:20] + "\n" + p[20:],  # a line break
        lambda p: p[:20] + " " + p[20:],  # a space
        lambda p: p.rstrip("=")[:-1],  # bad length / missing padding
        lambda p: p.replace("+", "-").replace("/", "_") + "-_",  # URL-safe alphabet
    ],
)
async def test_invalid_base64_is_refused(payload_edit):
    payload = base64.b64encode(encode("PNG", (41, 23))).decode()
    error = await refused(chat("data:image/png;base64," + payload_edit(payload)))
    assert error.message == (
        "image 1 is not valid base64; use the standard alphabet with '=' padding "
        "and no whitespace or line breaks"
    )


async def test_bytes_that_are_no_image_are_refused():
    error = await refused(chat(data_url(b"%PDF-1.7 this is not an image at all")))
    assert error.message == "image 1 is not a PNG/JPEG/WebP/TIFF/BMP/GIF image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_truncated_image_is_refused(fmt):
    noisy = Image.effect_noise((200, 200), 50).convert("RGB")  # so the data does not compress away
    buffer = io.BytesIO()
    noisy.save(buffer, format=fmt)
    data = buffer.getvalue()
    error = await refused(chat(data_url(data[: len(data) // 2])))
    assert error.message.startswith("image 1 is truncated or corrupt")


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


async def test_decompression_bomb_is_judged_from_the_header():
    bomb = png_declaring(20000, 20000)
    assert len(bomb) < 200
    # Were the pixels decoded, the short data would make it a 400 "truncated"; the 413 shows that
    # the size was refused first. Pillow's own Image.open would raise DecompressionBombError here.
    error = await refused(chat(data_url(bomb)), PayloadTooLarge)
    assert error.http_status == 413
    assert "20000x20000 = 400000000 pixels" in error.message
    assert "limits.max_image_pixels" in error.message


async def test_pixel_limit_is_ours_not_pillows_global(monkeypatch):
    image = data_url(encode("PNG", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 4096 pixels
    [result] = await prepare_images(chat(image), LIMITS, allow_remote=False)
    assert result.width == 64
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # ...or allow anything
    tight = LimitsSettings(max_image_pixels=64 * 64 - 1)
    await refused(chat(image), PayloadTooLarge, limits=tight)
    exact = LimitsSettings(max_image_pixels=64 * 64)
    assert len(await prepare_images(chat(image), exact, allow_remote=False)) == 1


async def test_image_bytes_limit_is_exact():
    data = encode("BMP", (30, 30))  # BMP: a size known to the byte, no compression
    assert (
        len(
            await prepare_images(
                chat(data_url(data)), LimitsSettings(max_image_bytes=len(data)), False
            )
        )
        == 1
    )
    error = await refused(
        chat(data_url(data)), PayloadTooLarge, limits=LimitsSettings(max_image_bytes=len(data) - 1)
    )
    assert error.http_status == 413 and "limits.max_image_bytes" in error.message


async def test_huge_payload_is_refused_before_decoding():
    # Not even base64: the length alone is over the limit, so it must be a 413, not a 400.
    url = "data:image/png;base64," + "!" * 40_000
    await refused(chat(url), PayloadTooLarge, limits=LimitsSettings(max_image_bytes=10_000))


async def test_too_many_images_is_counted_before_decoding_anything():
    garbage = "data:image/png;base64,!!!!"
    limits = LimitsSettings(max_images_per_request=2)
    error = await refused(chat(garbage, garbage, garbage), PayloadTooLarge, limits=limits)
    assert "3 images" in error.message and "limits.max_images_per_request" in error.message
    assert error.param == "messages"
    good = data_url(encode("PNG"))
    assert len(await prepare_images(chat(good, good), limits, allow_remote=False)) == 2


def test_forward_payload_keeps_the_request_and_data_urls():
    raw = {
        "model": "m",
        "temperature": 0.1,
        "vendor_knob": {"a": [1]},
        "messages": [{"role": "user", "content": [
            {"type": "image_url",
             "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]}],
    }  # fmt: skip
    assert forward_payload(parse_chat_request(raw), []) == raw


# --- remote images ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
     ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
     ("100.64.0.1", "non-global"),  # shared address space (carrier-grade NAT)
     ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
     ("255.255.255.255", "private"), ("240.0.0.1", "private"),  # Python counts these as private
     ("::1", "loopback"), ("::", "unspecified"), ("fe80::1%eth0", "link-local"),
     ("fc00::1", "private"), ("ff02::1", "multicast"),
     # IPv4 inside IPv6 is judged as the IPv4 address it reaches:
     ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
     ("64:ff9b::7f00:1", "loopback"), ("2002:7f00:1::", "loopback"),
     ("2001:db8::1", "private")],  # documentation range
)  # fmt: skip
def test_non_public_addresses_are_recognised(address, kind):
    assert non_public_kind(address) == kind


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert non_public_kind(address) is None


@pytest.fixture
def local_server():
    with local_image_server() as server:
        yield server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_real_local_server_is_refused_as_loopback(local_server, host):
    port = local_server.port
    url = f"http://{host}:{port}/page.png"
    error = await refused(chat(url), allow_remote=True)
    assert "loopback address" in error.message
    assert local_server.requests == 0
    async with httpx.AsyncClient(trust_env=False) as client:  # it was there and serving
        assert (await client.get(f"http://127.0.0.1:{port}/page.png")).status_code == 200
    assert local_server.requests == 1


def image_app(seen: list, image: bytes) -> FastAPI:
    """A real app standing in for a public image host (reached via ASGITransport)."""
    app = FastAPI()

    @app.get("/image.png")
    async def picture(request: Request):
        seen.append((request.headers["host"], request.scope["server"][0]))
        return Response(image, media_type="application/octet-stream")

    @app.get("/hop/{n}")
    async def hop(n: int):
        return RedirectResponse(f"/hop/{n - 1}" if n > 1 else "/image.png", status_code=302)

    @app.get("/to/{target:path}")
    async def elsewhere(target: str):
        return RedirectResponse(target, status_code=307)

    @app.get("/missing.png")
    async def missing():
        return Response(status_code=404)

    @app.get("/large.png")
    async def large():
        # Finite: httpx's ASGI transport collects the whole body. No Content-Length is sent, so
        # the cap is met while counting.
        async def chunks():
            for _ in range(8):
                yield b"\x00" * 65536

        return StreamingResponse(chunks(), media_type="image/png")

    @app.get("/slow.png")
    async def slow():
        await asyncio.Event().wait()

    return app


def fetcher_for(app: FastAPI, table: dict[str, list[str]], **kw) -> tuple[RemoteFetcher, list]:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host in table:
            return table[host]
        return await system_resolver(host, port)

    return RemoteFetcher(resolver=resolve, transport=httpx.ASGITransport(app), **kw), asked


async def test_public_host_is_fetched_from_the_checked_address_and_forwarded_as_data_url():
    seen: list = []
    jpeg = encode("JPEG", (50, 30))
    fetcher, asked = fetcher_for(image_app(seen, jpeg), {"images.example": [PUBLIC_IP]})
    request = chat("https://images.example/image.png")
    [image] = await prepare_images(request, LIMITS, allow_remote=True, fetcher=fetcher)
    assert (image.source, image.format, image.width, image.height) == ("remote", "JPEG", 50, 30)
    assert image.url == data_url(jpeg, "image/jpeg")
    assert seen == [("images.example", PUBLIC_IP)]  # name in Host, connection to the checked IP
    assert asked == ["images.example"]
    forwarded = forward_payload(request, [image])
    assert forwarded["messages"][0]["content"][1]["image_url"]["url"] == image.url


async def test_three_redirects_are_followed_and_each_hop_checked():
    seen: list = []
    fetcher, asked = fetcher_for(image_app(seen, encode("PNG")), {"images.example": [PUBLIC_IP]})
    [image] = await prepare_images(
        chat("http://images.example/hop/3"), LIMITS, allow_remote=True, fetcher=fetcher
    )
    assert image.format == "PNG" and len(asked) == 4


async def test_a_fourth_redirect_is_refused():
    fetcher, _ = fetcher_for(image_app([], encode("PNG")), {"images.example": [PUBLIC_IP]})
    error = await refused(chat("http://images.example/hop/4"), allow_remote=True, fetcher=fetcher)
    assert "more than 3 redirects" in error.message


@pytest.mark.parametrize(("target", "message"), [
    ("http://127.0.0.1/image.png", "image 1: host '127.0.0.1' resolves to 127.0.0.1 (loopback address); "
                                   "ocrd only fetches images from public addresses"),
    ("http://metadata.internal/x", "image 1: host 'metadata.internal' resolves to 169.254.169.254 "
                                   "(link-local address); ocrd only fetches images from public addresses"),
    # The refusal quotes the URL as the redirect's Location reached the check.
    ("file:///etc/passwd", "image 1: only http(s) URLs with a host can be fetched (got 'file:/etc/passwd')"),
])
async def test_redirect_to_a_private_host_or_other_scheme_is_refused(target, message):
    seen: list = []
    table = {"images.example": [PUBLIC_IP], "metadata.internal": ["169.254.169.254"]}
    fetcher, _ = fetcher_for(image_app(seen, encode("PNG")), table)
    error = await refused(
        chat(f"http://images.example/to/{target}"), allow_remote=True, fetcher=fetcher
    )
    assert seen == []
    assert error.message == message


async def test_every_resolved_address_must_be_public():
    seen: list = []
    table = {"images.example": [PUBLIC_IP, "10.0.0.7"]}
    fetcher, _ = fetcher_for(image_app(seen, encode("PNG")), table)
    error = await refused(
        chat("http://images.example/image.png"), allow_remote=True, fetcher=fetcher
    )
    assert "10.0.0.7 (private address)" in error.message and seen == []


async def test_unresolvable_host_is_a_clear_400():
    async def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror("Name or service not known")

    error = await refused(
        chat("http://no-such-host.example/a.png"),
        allow_remote=True,
        fetcher=RemoteFetcher(resolver=nowhere),
    )
    assert "could not be resolved" in error.message


async def test_remote_error_status_is_a_400():
    fetcher, _ = fetcher_for(image_app([], b""), {"images.example": [PUBLIC_IP]})
    error = await refused(
        chat("http://images.example/missing.png"), allow_remote=True, fetcher=fetcher
    )
    assert "answered HTTP 404" in error.message


async def test_remote_body_is_capped_while_streaming():
    fetcher, _ = fetcher_for(image_app([], b""), {"images.example": [PUBLIC_IP]})
    error = await refused(
        chat("http://images.example/large.png"),
        PayloadTooLarge,
        limits=LimitsSettings(max_image_bytes=200_000),
        allow_remote=True,
        fetcher=fetcher,
    )
    assert "limits.max_image_bytes" in error.message


async def test_remote_declared_length_over_the_cap_is_refused():
    big = encode("BMP", (100, 100))
    fetcher, _ = fetcher_for(image_app([], big), {"images.example": [PUBLIC_IP]})
    await refused(
        chat("http://images.example/image.png"),
        PayloadTooLarge,
        limits=LimitsSettings(max_image_bytes=len(big) - 1),
        allow_remote=True,
        fetcher=fetcher,
    )


async def test_remote_fetch_gives_up_after_its_timeout():
    fetcher, _ = fetcher_for(image_app([], b""), {"images.example": [PUBLIC_IP]}, timeout=0.2)
    error = await refused(
        chat("http://images.example/slow.png"), allow_remote=True, fetcher=fetcher
    )
    assert "could not be fetched within" in error.message


async def test_fetched_bytes_are_validated_like_data_urls():
    fetcher, _ = fetcher_for(
        image_app([], b"<html>not an image</html>"), {"images.example": [PUBLIC_IP]}
    )
    error = await refused(
        chat("http://images.example/image.png"), allow_remote=True, fetcher=fetcher
    )
    assert "is not a PNG/JPEG/WebP/TIFF/BMP/GIF image" in error.message
