"""Every image in a chat request, checked before a runner sees it.

``prepare_images`` finds each ``image_url`` part, refuses what ocrd never accepts (``file://`` and
other schemes; ``http(s)`` unless ``http.allow_remote_image_urls``), enforces the limits, and has
Pillow read each image's header; a PNG or JPEG whose structure shows it whole goes on without its
pixels decoded here (``ocrd.http.image_files``: the runner decodes it), anything else is decoded
fully, so that a runner never gets an image cut short. What it returns is what the caller
forwards: a ``data:`` URL per image (the client's own URL, unchanged, for ``data:`` URLs; a new
one for fetched images) plus facts for the logs.

Decisions:
* base64 is strict (``validate=True``): standard alphabet, ``=`` padding, no whitespace or line
  breaks. The URL is forwarded as it came, so ocrd accepts exactly what a runner's decoder accepts
  rather than repairing a copy the runner never sees.
* a ``data:`` MIME type that disagrees with the bytes is accepted (clients mislabel JPEGs as PNGs
  all the time); the real format is reported.
* only the first frame of a GIF/TIFF/WebP is decoded; runners read no more than that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pybase64
from PIL import Image

from ocrd.config.settings import LimitsSettings
from ocrd.errors import InvalidRequest, PayloadTooLarge
from ocrd.http.image_files import is_whole
from ocrd.http.openai.protocol import ChatCompletionRequest, ImagePart

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
# Decoded on the event loop up to these (base64 text; pixels, about 5 ms of decoding): a thread
# hop costs more than that; anything larger goes to a worker thread.
INLINE_BYTES = 256 * 1024
INLINE_PIXELS = 512 * 512
_FORMAT_NAMES = "PNG/JPEG/WebP/TIFF/BMP/GIF"
# Pillow names a multi-picture JPEG "MPO"; to a runner it is a JPEG.
_REPORTED_FORMAT = {"MPO": "JPEG"}
_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}


@dataclass(frozen=True)
class ImageRef:
    """Where an image part sits in the request."""

    number: int  # 1-based, in the order the parts appear; used in messages
    message_index: int
    part_index: int
    url: str

    @property
    def param(self) -> str:
        return f"messages.{self.message_index}.content.{self.part_index}.image_url.url"


@dataclass(frozen=True)
class ValidatedImage:
    """An image that decoded within the limits, and the URL to forward for it."""

    ref: ImageRef
    url: str  # a data: URL; the client's own when it sent one
    source: str  # "data" or "remote"
    format: str  # the real format (PNG, JPEG, ...), whatever the data: URL claimed
    mime: str
    width: int
    height: int
    nbytes: int  # encoded size, after base64 decoding


def find_images(request: ChatCompletionRequest) -> list[ImageRef]:
    refs: list[ImageRef] = []
    for m, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for p, part in enumerate(message.content):
            if isinstance(part, ImagePart):
                refs.append(ImageRef(len(refs) + 1, m, p, part.image_url.url))
    return refs


def _scheme(url: str) -> str:
    head, sep, _ = url[:64].partition(":")
    return head.strip().lower() if sep else ""


async def prepare_images(
    request: ChatCompletionRequest,
    limits: LimitsSettings,
    allow_remote: bool,
    fetcher: RemoteFetcher | None = None,
) -> list[ValidatedImage]:
    """Validate every image of ``request``; the first problem raises an ``OcrdError``.

    Cheap checks (count, schemes) run over all images before any is decoded. A large image is
    decoded in a worker thread, one at a time, so it neither blocks the event loop nor holds more
    than one pixel buffer per request; a small one (``INLINE_BYTES``, ``INLINE_PIXELS``) is done
    on the loop, where it costs less than the thread hop.
    """
    refs = find_images(request)
    if len(refs) > limits.max_images_per_request:
        raise PayloadTooLarge(
            f"the request has {len(refs)} images; at most {limits.max_images_per_request} are "
            "allowed per request (limits.max_images_per_request)",
            param="messages",
        )
    for ref in refs:
        _check_scheme(ref, allow_remote)
    images = []
    for ref in refs:
        remote = _scheme(ref.url) != "data"
        if remote:
            data = await (fetcher or RemoteFetcher()).fetch(
                ref.url,
                max_bytes=limits.max_image_bytes,
                what=f"image {ref.number}",
                param=ref.param,
            )
        elif len(ref.url) <= INLINE_BYTES:
            data = decode_data_url(ref, limits.max_image_bytes)
        else:
            data = await asyncio.to_thread(decode_data_url, ref, limits.max_image_bytes)
        im = _open_header(data, ref)
        if im.size[0] * im.size[1] <= INLINE_PIXELS and len(data) <= INLINE_BYTES:
            fmt, width, height = _check(im, data, ref, limits.max_image_pixels)
        else:
            fmt, width, height = await asyncio.to_thread(_check, im, data, ref, limits.max_image_pixels)
        url = await asyncio.to_thread(_as_data_url, data, fmt) if remote else ref.url
        source = "remote" if remote else "data"
        images.append(ValidatedImage(ref, url, source, fmt, _MIME[fmt], width, height, len(data)))
    return images


def _as_data_url(data: bytes, fmt: str) -> str:
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def _check_scheme(ref: ImageRef, allow_remote: bool) -> None:
    scheme = _scheme(ref.url)
    if scheme == "data":
        return
    if scheme in ("http", "https"):
        if not allow_remote:
            raise InvalidRequest(
                f"image {ref.number} is an {scheme}:// URL, but fetching remote images is off "
                "(http.allow_remote_image_urls = false); send the image as a data: URL",
                param=ref.param,
            )
        return
    if scheme == "file":
        message = (
            f"image {ref.number}: file:// URLs are never accepted; send the image as a data: URL"
        )
    else:
        shown = f"{scheme}: URLs are" if scheme else "a URL without a scheme is"
        message = (
            f"image {ref.number}: {shown} not accepted; send the image as a data: URL"
            " (data:image/png;base64,...)"
        )
    raise InvalidRequest(message, param=ref.param)


def decode_data_url(ref: ImageRef, max_bytes: int) -> bytes:
    """The bytes of ``data:<image/*>[;params];base64,<payload>``, or a 400/413 error."""
    header, comma, payload = ref.url.partition(",")
    fields = [f.strip().lower() for f in header[len("data:") :].split(";")]
    if not comma or len(fields) < 2 or fields[-1] != "base64":
        raise InvalidRequest(
            f"image {ref.number} is not a base64 data URL; use data:<mime>;base64,<payload>",
            param=ref.param,
        )
    if not fields[0].startswith("image/"):
        raise InvalidRequest(
            f"image {ref.number} has MIME type {fields[0] or '(none)'!r}; a data URL must say "
            "image/* (for example data:image/png;base64,...)",
            param=ref.param,
        )
    # Refuse before decoding: the decoded size is known from the length (3 bytes per 4 chars).
    if len(payload) // 4 * 3 - 2 > max_bytes:
        raise _too_many_bytes(ref, max_bytes)
    try:
        data = strict_b64decode(payload)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"image {ref.number} is not valid base64; use the standard alphabet with '=' padding "
            "and no whitespace or line breaks",
            param=ref.param,
        ) from None
    if len(data) > max_bytes:
        raise _too_many_bytes(ref, max_bytes)
    return data


def strict_b64decode(payload: str) -> bytes:
    """``base64.b64decode(payload, validate=True)``, the same bytes and the same refusals, most
    of the time by pybase64 (SIMD: 3 us for a 27 KB image where the standard library takes
    80 us). pybase64 refuses a little more (padding after a complete quantum, as in ``AAAA=``,
    which the standard library takes), never less and never other bytes, so what it refuses is
    decoded again by the standard library, whose answer stands."""
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(payload, validate=True)


def _too_many_bytes(ref: ImageRef, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"image {ref.number} is larger than {max_bytes} bytes (limits.max_image_bytes); "
        "send a smaller or more compressed image",
        param=ref.param,
    )


def inspect_image(data: bytes, ref: ImageRef, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an image that decodes fully within ``max_pixels``.

    The size is judged from the header, before any pixel is decoded. Pillow's own bomb check
    (``Image.MAX_IMAGE_PIXELS``) is bypassed at open time so that ``limits.max_image_pixels``
    alone decides; should Pillow still raise it while decoding (GIF frames, TIFF tiles), it is
    reported as the same 413. The pixel buffer is freed before returning.
    """
    return _decode(_open_header(data, ref), ref, max_pixels)


def _check(im: Any, data: bytes, ref: ImageRef, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) of an opened image within ``max_pixels`` that is whole: a PNG or
    JPEG whose structure shows it (``ocrd.http.image_files``: no pixel decoded; the runner decodes
    them), anything else decoded."""
    if im.format in ("PNG", "JPEG", "MPO") and is_whole(data, "JPEG" if im.format == "MPO" else im.format):
        with im:
            _check_pixels(im.size, ref, max_pixels)
            fmt = _REPORTED_FORMAT.get(str(im.format), str(im.format))
            width, height = im.size
        return fmt, width, height
    return _decode(im, ref, max_pixels)


def _decode(im: Any, ref: ImageRef, max_pixels: int) -> tuple[str, int, int]:
    """Checks the pixel count an opened image declares, then decodes it; frees its pixels."""
    with im:
        _check_pixels(im.size, ref, max_pixels)
        try:
            im.load()
        except Image.DecompressionBombError:
            raise _too_many_pixels(im.size, ref, max_pixels) from None
        except (
            Exception
        ):  # Pillow raises anything (OSError, SyntaxError, struct.error...) on bad data
            raise _corrupt(ref) from None
        _check_pixels(im.size, ref, max_pixels)  # a GIF frame may enlarge the canvas
        fmt = _REPORTED_FORMAT.get(str(im.format), str(im.format))
        width, height = im.size
    return fmt, width, height


def _open_header(data: bytes, ref: ImageRef) -> Any:
    # Image.open() would run Pillow's global decompression-bomb check before we see the size, so
    # the plugin factories are called directly, as Image.open does, restricted to our formats.
    prefix = data[:16]
    for name in ALLOWED_FORMATS:
        if name not in Image.OPEN:
            Image.init()
        if name not in Image.OPEN:  # a Pillow built without this plugin
            continue
        factory, accept = Image.OPEN[name]
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            return factory(io.BytesIO(data), "")
        except Exception:  # the magic matched, the header did not parse
            raise _corrupt(ref) from None
    raise InvalidRequest(f"image {ref.number} is not a {_FORMAT_NAMES} image", param=ref.param)


def _check_pixels(size: tuple[int, int], ref: ImageRef, max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise _too_many_pixels(size, ref, max_pixels)


def _too_many_pixels(size: tuple[int, int], ref: ImageRef, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"image {ref.number} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, more than "
        f"{max_pixels} (limits.max_image_pixels); scale it down",
        param=ref.param,
    )


def _corrupt(ref: ImageRef) -> InvalidRequest:
    return InvalidRequest(
        f"image {ref.number} is truncated or corrupt; check that the whole file was sent",
        param=ref.param,
    )


def forward_payload(request: ChatCompletionRequest, images: list[ValidatedImage]) -> dict[str, Any]:
    """The request as the runner should get it: as sent (unknown fields kept), fetched images
    replaced by their data: URLs."""
    payload = request.model_dump(exclude_unset=True)
    for image in images:
        if image.source == "remote":
            part = payload["messages"][image.ref.message_index]["content"][image.ref.part_index]
            part["image_url"]["url"] = image.url
    return payload


# --- remote images (only with http.allow_remote_image_urls) -----------------------------------

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, via the system resolver (off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def non_public_kind(address: str) -> str | None:
    """Why ``address`` is not a public unicast address ("loopback", "private", ...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 addresses embedded in IPv6 reach the IPv4 host: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return non_public_kind(str(embedded))
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RemoteFetcher:
    """Fetches an image URL with httpx, refusing non-public hosts.

    Each hop (the URL, then every redirect) is resolved here and ALL its addresses are checked;
    the connection then goes to the checked address (the Host header and TLS SNI keep the name),
    so a DNS answer that changes between check and connect cannot redirect it. ``resolver`` and
    ``transport`` are for tests; ``trust_env=False`` keeps proxy variables from routing around
    the check.
    """

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
        max_redirects: int = 3,
    ):
        self.resolver = resolver
        self.transport = transport
        self.timeout = timeout
        self.max_redirects = max_redirects

    async def fetch(self, url: str, *, max_bytes: int, what: str, param: str | None) -> bytes:
        """The body of ``url`` (at most ``max_bytes``); failures are ``InvalidRequest`` (400)."""
        try:
            async with asyncio.timeout(self.timeout), httpx.AsyncClient(
                transport=self.transport, trust_env=False, follow_redirects=False,
                timeout=self.timeout,
            ) as client:  # fmt: skip
                return await self._follow(client, url, max_bytes, what, param)
        except TimeoutError:
            message = f"{what} could not be fetched within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            message = f"{what} could not be fetched ({type(exc).__name__}: {exc})"
        raise InvalidRequest(message, param=param)

    async def _follow(
        self, client: httpx.AsyncClient, url: str, max_bytes: int, what: str, param: str | None
    ) -> bytes:
        for _hop in range(self.max_redirects + 1):
            target, address = await self._checked(url, what, param)
            response = await client.send(_pinned_request(client, target, address), stream=True)
            try:
                if response.is_redirect:
                    url = str(target.join(response.headers["location"]))
                    continue
                if not response.is_success:
                    raise InvalidRequest(
                        f"{what}: {target.host} answered HTTP {response.status_code}", param=param
                    )
                return await _read_capped(response, max_bytes, what, param)
            finally:
                await response.aclose()
        raise InvalidRequest(
            f"{what}: more than {self.max_redirects} redirects; give the final URL", param=param
        )

    async def _checked(self, url: str, what: str, param: str | None) -> tuple[httpx.URL, str]:
        """The parsed URL and the address to connect to, once every address is known public."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise InvalidRequest(f"{what}: {url[:200]!r} is not a valid URL", param=param) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidRequest(
                f"{what}: only http(s) URLs with a host can be fetched (got {url[:200]!r})",
                param=param,
            )
        host = parsed.raw_host.decode("ascii")
        try:
            port = parsed.port or (80 if parsed.scheme == "http" else 443)
            addresses = await self.resolver(host, port)
        except OSError:
            addresses = []
        if not addresses:
            raise InvalidRequest(f"{what}: host {host!r} could not be resolved", param=param)
        for address in addresses:
            kind = non_public_kind(address)
            if kind is not None:
                raise InvalidRequest(
                    f"{what}: host {host!r} resolves to {address} ({kind} address); ocrd only "
                    "fetches images from public addresses",
                    param=param,
                )
        return parsed, addresses[0]


def _pinned_request(client: httpx.AsyncClient, target: httpx.URL, address: str) -> httpx.Request:
    # Connect to the checked address; the name goes in Host and in TLS SNI (which httpcore also
    # uses to verify the certificate).
    return client.build_request(
        "GET",
        target.copy_with(host=address),
        # identity: a compressed body could inflate far past max_image_bytes in a single chunk
        headers={
            "Host": target.netloc.decode("ascii"),
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        },
        extensions={"sni_hostname": target.raw_host.decode("ascii")},
    )


async def _read_capped(
    response: httpx.Response, max_bytes: int, what: str, param: str | None
) -> bytes:
    too_large = PayloadTooLarge(
        f"{what} is larger than {max_bytes} bytes (limits.max_image_bytes)", param=param
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, total = [], 0
    async for chunk in response.aiter_raw():
        total += len(chunk)
        if total > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
