"""Docker as ocrd sees it: is the engine reachable, does it have an NVIDIA runtime, is an image
there, which containers are ocrd's.

The docker SDK is an optional dependency (the ``vllm`` extra), so nothing here imports it at module
level and nothing raises for a host without Docker: callers get a ``DockerStatus`` that says why
Docker cannot be used, in one line. Every call blocks (HTTP to the engine's socket); async callers
run them with ``asyncio.to_thread``.

Containers ocrd starts carry labels (``ocrd.managed=1``, ``ocrd.model``, ``ocrd.config-hash``), so
that ocrd finds its own after a restart and never touches anybody else's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MANAGED_LABEL = "ocrd.managed"
MODEL_LABEL = "ocrd.model"
CONFIG_HASH_LABEL = "ocrd.config-hash"

INSTALL_HINT = "pip install 'ocrd-vlm[vllm]'"


@dataclass(frozen=True)
class DockerStatus:
    reachable: bool
    reason: str = ""  # why Docker cannot be used; one line
    version: str = ""  # the engine's version, e.g. "20.10.24"
    runtimes: tuple[str, ...] = ()  # container runtimes the engine knows, e.g. ("nvidia", "runc")

    @property
    def nvidia_runtime(self) -> bool:
        """The NVIDIA container toolkit is registered with the engine (GPU requests can work)."""
        return "nvidia" in self.runtimes


def docker_client(timeout: float = 10.0) -> Any:
    """A connected ``docker.DockerClient`` (from ``DOCKER_HOST`` or the default socket), or a
    one-line string saying why there is none."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return f"the docker package is not installed: {INSTALL_HINT}"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        return f"Docker is not reachable: {_one_line(exc)}"
    except OSError as exc:  # socket errors that the SDK lets through
        return f"Docker is not reachable: {_one_line(exc)}"
    return client


def docker_status(timeout: float = 5.0) -> DockerStatus:
    client = docker_client(timeout)
    if isinstance(client, str):
        return DockerStatus(reachable=False, reason=client)
    try:
        info = client.info()
    except Exception as exc:  # the SDK's errors and socket errors alike: never raise from here
        return DockerStatus(reachable=False, reason=f"Docker did not answer: {_one_line(exc)}")
    finally:
        client.close()
    return DockerStatus(
        reachable=True,
        version=str(info.get("ServerVersion", "")),
        runtimes=tuple(sorted(info.get("Runtimes") or {})),
    )


def image_present(client: Any, image: str) -> bool:
    """True when ``image`` is in the engine's local store (never pulls)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


def managed_containers(client: Any) -> list[Any]:
    """Every container (running or not) that carries ocrd's label."""
    return client.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=1"})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
