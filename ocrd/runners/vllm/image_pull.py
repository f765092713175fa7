"""Pulling a Docker image on request (`ocrctl pull-image`): ocrd never pulls one implicitly.

The docker SDK's streaming pull (``APIClient.pull(stream=True, decode=True)``) yields the engine's
JSON progress messages, one per layer step ("Pulling fs layer", "Downloading" with byte counts,
"Pull complete") and a few about the whole image ("Digest: ...", "Status: Downloaded newer
image ..."). The SDK blocks, so a thread reads them and hands each to the event loop as an
``ImagePullStep``; the last step has ``done`` and the image's id.

Failures become one line with what to do: Docker unreachable (EngineUnavailable), the registry
unreachable (RegistryUnavailable), no such image (ImageNotFound), refused credentials
(PermissionDenied), a malformed reference (InvalidRequest). The engine reports some before the
stream starts (an HTTP error status) and some inside it (an ``error`` message): both are
classified by ``pull_error``.

A client that stops following ends the pull: the reader stops at the engine's next message and
closes its connection, and the engine cancels a pull whose client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ocrd.errors import (
    EngineUnavailable,
    ImageNotFound,
    InvalidRequest,
    OcrdError,
    PermissionDenied,
    RegistryUnavailable,
)
from ocrd.runners.vllm import docker_host

READ_TIMEOUT = 300.0  # seconds the engine may stay silent during a pull
_END = object()  # the reader thread's last item


@dataclass(frozen=True)
class ImagePullStep:
    """One message of the engine about a pull, or the final one (``done``)."""

    image: str
    layer: str = ""
    status: str = ""
    current_bytes: int = 0
    total_bytes: int = 0
    done: bool = False
    image_id: str = ""
    message: str = ""


def step_from_message(image: str, message: dict[str, Any]) -> ImagePullStep:
    """A step from one of the engine's progress messages (without an ``error`` key)."""
    detail = message.get("progressDetail") or {}
    # Messages about the whole image carry the tag as their id ("Pulling from x", id "v1").
    status = str(message.get("status", ""))
    layer = str(message.get("id", "")) if "progressDetail" in message else ""
    return ImagePullStep(
        image=image,
        layer=layer,
        status=status,
        current_bytes=max(0, int(detail.get("current") or 0)),
        total_bytes=max(0, int(detail.get("total") or 0)),
    )


def pull_error(image: str, text: str, status_code: int | None = None) -> OcrdError:
    """The error for a failed pull of ``image``, from the engine's message (and HTTP status)."""
    text = " ".join(text.split()) or "unknown error"
    lowered = text.lower()
    if status_code == 400 or "invalid reference format" in lowered:
        return InvalidRequest(f"{image!r} is not a valid image reference: {text}", param="image")
    if "pull access denied" in lowered or "repository does not exist" in lowered:
        return ImageNotFound(f"the registry has no image {image} ({text}); check the name, or "
                             f"`docker login` on this host first if it is private")
    if status_code == 404 or "manifest unknown" in lowered or "not found" in lowered:
        return ImageNotFound(f"the registry has no image {image} ({text}); check the name and tag")
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return PermissionDenied(f"the registry refused to serve {image} ({text}); "
                                f"`docker login` on this host first")
    return RegistryUnavailable(
        f"could not pull {image}: {text}; check that this host reaches the registry (network, "
        f"proxy, DNS), or copy the image over with `docker save` and `docker load`"
    )


def docker_unavailable(reason: str) -> EngineUnavailable:
    return EngineUnavailable(f"{reason}; start the Docker engine (or point DOCKER_HOST at it), "
                             f"then pull again")


def _connect() -> Any:
    # Long reads: the engine may say nothing for a while between two steps of a big layer.
    return docker_host.docker_client(timeout=READ_TIMEOUT)


async def pull_image(image: str, *, connect: Callable[[], Any] = _connect) -> AsyncIterator[ImagePullStep]:
    """Pulls ``image`` and yields its steps; the last one has ``done`` and the image id.

    ``connect`` returns a docker client or a one-line reason why there is none
    (``docker_host.docker_client``)."""
    client = await asyncio.to_thread(connect)
    if isinstance(client, str):
        raise docker_unavailable(client)
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_read_pull, daemon=True, name=f"pull-{image}",
                              args=(client, image, stop, lambda item: _post(loop, items, item)))
    reader.start()
    try:
        while (item := await items.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # a client that went away: the reader ends the pull at the next message


def _read_pull(client: Any, image: str, stop: threading.Event, emit: Callable[[Any], None]) -> None:
    """The thread that follows the engine's stream (blocking); ends with ``_END``."""
    from docker.errors import APIError, DockerException

    try:
        for message in client.api.pull(image, stream=True, decode=True):
            if stop.is_set():
                return
            if "error" in message:
                detail = message.get("errorDetail") or {}
                emit(pull_error(image, str(detail.get("message") or message["error"])))
                return
            emit(step_from_message(image, message))
        image_id = client.images.get(image).id
        emit(ImagePullStep(image=image, done=True, image_id=image_id,
                           message=f"{image} is on this host (image {image_id})"))
    except APIError as exc:
        status = exc.response.status_code if exc.response is not None else None
        emit(pull_error(image, str(exc.explanation or exc), status))
    except (DockerException, OSError) as exc:  # the engine went away mid-pull
        emit(docker_unavailable(f"Docker stopped answering: {' '.join(str(exc).split())}"))
    finally:
        # Closing the connection is what makes the engine cancel a pull nobody follows.
        with contextlib.suppress(Exception):
            client.close()
        emit(_END)


def _post(loop: asyncio.AbstractEventLoop, items: asyncio.Queue[Any], item: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
        loop.call_soon_threadsafe(items.put_nowait, item)
