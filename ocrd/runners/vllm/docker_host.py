"""Docker as ocrd sees it: is the engine reachable, does it have an NVIDIA runtime, is an image
there, which containers are ocrd's.

The docker SDK is an optional dependency (the ``vllm`` extra), so nothing here imports it at module
level and nothing raises for a host without Docker: callers get a ``DockerStatus`` that says why
Docker cannot be used, in one line. Every call blocks (HTTP to the engine's socket); async callers
run them with ``asyncio.to_thread``.

Containers ocrd starts carry labels (``ocrd.managed=1``, ``ocrd.model``, ``ocrd.config-hash``, and
``ocrd.instance`` naming the daemon), so that ocrd finds its own after a restart and never touches
anybody else's, another ocrd's on the same engine included.

The helpers below the status functions take a connected client or container and may raise the
SDK's errors; they are for ``ocrd.runners.vllm.container``: start errors turned into one line, the
published port, log tails, the processes and memory of a container.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrd.install_hint import install_command

DEFAULT_SOCKET = "/var/run/docker.sock"  # the SDK's default without DOCKER_HOST
MANAGED_LABEL = "ocrd.managed"
MODEL_LABEL = "ocrd.model"
CONFIG_HASH_LABEL = "ocrd.config-hash"
INSTANCE_LABEL = "ocrd.instance"

NVIDIA_RUNTIME_HINT = (
    "Docker has no NVIDIA runtime: install the NVIDIA Container Toolkit "
    "(`nvidia-ctk runtime configure --runtime=docker`, then restart Docker), or run the model "
    "with the transformers engine"
)


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


def install_hint() -> str:
    """How to install the docker SDK (the ``vllm`` extra) into the daemon's venv."""
    return install_command("vllm")


def docker_client(timeout: float = 10.0) -> Any:
    """A connected ``docker.DockerClient`` (from ``DOCKER_HOST`` or the default socket), or a
    one-line string saying why there is none."""
    refused = _socket_refuses(timeout)
    if refused is not None:
        return f"Docker is not reachable: {refused}"
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return f"the docker package is not installed: {install_hint()}"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        return f"Docker is not reachable: {_one_line(exc)}"
    except OSError as exc:  # socket errors that the SDK lets through
        return f"Docker is not reachable: {_one_line(exc)}"
    return client


def _socket_refuses(timeout: float) -> str | None:
    """Why the engine's Unix socket takes no connection, found without the SDK; None: it does
    (or the engine is reached another way), and the SDK decides. The daemon asks before READY,
    and importing the SDK (~70 ms) to learn that a host without Docker has none is not worth it."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return None
    path = host.removeprefix("unix://") if host else DEFAULT_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(path)
        except OSError as exc:
            return f"cannot connect to {path}: {exc.strerror or exc}"
    return None


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


def managed_containers(client: Any, instance: str | None = None) -> list[Any]:
    """Every container (running or not) that carries ocrd's label; only ``instance``'s if given."""
    labels = [f"{MANAGED_LABEL}=1"]
    if instance is not None:
        labels.append(f"{INSTANCE_LABEL}={instance}")
    return client.containers.list(all=True, filters={"label": labels})


def pull_image(client: Any, image: str, report: Callable[[str], None]) -> None:
    """Pulls ``image``, reporting each layer's status line; only on an explicit request (a
    config switch or `ocrctl pull-image`), never as a side effect of a load."""
    for event in client.api.pull(image, stream=True, decode=True):  # the SDK splits off the tag
        if "error" in event:
            from docker.errors import APIError

            raise APIError(str(event["error"]))
        status = " ".join(filter(None, (event.get("id"), event.get("status"), event.get("progress"))))
        if status:
            report(status)


def start_error_line(exc: BaseException, host_port: int | None = None) -> str:
    """One line for an error from creating or starting a container, saying what to do."""
    text = _one_line(getattr(exc, "explanation", None) or exc)
    if "could not select device driver" in text:
        return NVIDIA_RUNTIME_HINT
    if "port is already allocated" in text or "address already in use" in text:
        where = f"127.0.0.1:{host_port}" if host_port else "the container's host port"
        return f"{where} is already in use on this host: free it, or choose another port"
    return f"Docker could not start the container: {text}"


def published_port(container: Any, port: str) -> int | None:
    """The host port that ``port`` ("8000/tcp") of a started container is published on."""
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(port) or ():
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def log_tail(container: Any, lines: int) -> list[str]:
    """The container's last ``lines`` log lines (stdout and stderr), oldest first."""
    raw = container.logs(stdout=True, stderr=True, tail=lines)
    return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]


def follow_log_stream(container: Any, tail: int | str) -> Any:
    """A blocking stream of the container's log chunks: the last ``tail`` lines ("all": every
    one), then new ones until it stops; ``close()`` ends it from another thread."""
    if tail == 0:
        # Docker 20.10 ends a followed stream at once when asked for no old lines: ask for the
        # lines since now instead.
        return container.logs(stream=True, follow=True, stdout=True, stderr=True, since=time.time())
    return container.logs(stream=True, follow=True, stdout=True, stderr=True, tail=tail)


def container_pids(container: Any) -> list[int]:
    """Host pids of the container's processes (``docker top``), e.g. to match NVML's."""
    top = container.top()
    column = top["Titles"].index("PID")
    return [int(row[column]) for row in top.get("Processes") or ()]


def cgroup_memory_bytes(pid: int, proc: Path = Path("/proc"), sysfs: Path = Path("/sys/fs/cgroup")) -> int:
    """Memory of the cgroup that ``pid`` is in (a container's), less inactive page cache, as
    `docker stats` shows it; 0 when it cannot be read (e.g. the pid is in another namespace)."""
    try:
        entries = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return 0
    for entry in entries:
        _, controllers, path = entry.split(":", 2)
        if "memory" in controllers.split(","):  # cgroup v1
            return _memory_figure(sysfs / "memory" / path.lstrip("/"), "memory.usage_in_bytes",
                                  "total_inactive_file")
    for entry in entries:
        if entry.startswith("0::"):  # cgroup v2
            return _memory_figure(sysfs / entry[3:].lstrip("/"), "memory.current", "inactive_file")
    return 0


def _memory_figure(directory: Path, usage_file: str, inactive_key: str) -> int:
    try:
        usage = int((directory / usage_file).read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return max(0, usage - int(stat.get(inactive_key, 0)))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
