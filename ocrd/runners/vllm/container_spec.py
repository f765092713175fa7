"""The container ocrd makes for one vLLM model: from a ``RunnerSpec`` to the docker SDK's create
arguments, and the hash of everything that shapes them.

Pure (no Docker calls; the image id comes in), so what a container will look like is checked
without an engine. ``ocrd.runners.vllm.container.DockerRunner`` creates it; after a restart, adoption
compares a running container's ``ocrd.config-hash`` label with the hash of what ocrd would
create now, and keeps the container only when they match.

``RunnerSpec.options`` of the ``vllm`` engine with the docker launcher (only ``image`` and
``hub_dir`` are required)::

    image             "vllm/vllm-openai:v0.11.2"  never pulled unless pull = true
    pull              false
    hub_dir           "/var/cache/hf/hub"   ocrd's hub cache on the host
    hf_home           "/var/cache/hf"       the host's HF_HOME: mounted whole when hub_dir is in it
                                            (token, xet and module caches shared too); else only
                                            hub_dir is mounted
    model             what `vllm serve` loads (default: the model's repo id; resolved in the cache)
    revision          a commit or branch to load (default: the cache's main)
    served_model_name the id clients send (default: ocrd's model id)
    args              ["--trust-remote-code", "--max-model-len", "8192", ...]: the catalog's and
                      the config's extra `vllm serve` arguments; never the ones ocrd sets itself
    gpu_memory_utilization  0.45  the planner's share of the GPU (parallel models add up < 1)
    gpu               "GPU-8a1b..." or "0": the device to request (default: from spec.device);
                      spec.device "cpu" requests none
    offline           true: HF_HUB_OFFLINE=1 (the snapshot is complete; also taken from spec.env)
    load_timeout      seconds until the server answers, else the load fails (default 900)
    shm_size          "8g": a private /dev/shm instead of the default ipc=host
    user              the container's user ("vllm", "1000:1000"); default the image's (root)
    container_hf_home where the cache is mounted inside (default: the user's ~/.cache/huggingface)
    host_port         a fixed port on 127.0.0.1 (default: a free one chosen by Docker)
    env               extra environment for the container
    instance          this daemon's name on the engine (label ocrd.instance; default "default")
    labels            extra labels (tests mark their containers with one)
    request_timeout   seconds for one proxied request (default 600)
    launcher          "docker" or "process" (vllm.launcher): which runner the daemon makes;
                      not part of the container
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any

from ocrd.catalog.facts import check_managed_flags
from ocrd.errors import ConfigError
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.docker_host import CONFIG_HASH_LABEL, INSTANCE_LABEL, MANAGED_LABEL, MODEL_LABEL

CONTAINER_PORT = 8000
PORT_KEY = f"{CONTAINER_PORT}/tcp"
ROOT_HF_HOME = "/root/.cache/huggingface"
# Paths on the host mean nothing inside the container: the cache variables are set from the mount.
_HOST_ONLY_ENV = ("HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class ContainerOptions:
    image: str
    hub_dir: str
    pull: bool = False
    hf_home: str | None = None
    model: str | None = None
    revision: str | None = None
    served_model_name: str | None = None
    args: tuple[str, ...] = ()
    gpu_memory_utilization: float | None = None
    gpu: str | None = None
    offline: bool = False
    load_timeout: float = 900.0
    shm_size: str | None = None
    user: str | None = None
    container_hf_home: str | None = None
    host_port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    instance: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    request_timeout: float = 600.0
    launcher: str = "docker"

    @classmethod
    def from_spec(cls, spec: RunnerSpec) -> ContainerOptions:
        raw = dict(spec.options)
        where = f"vllm runner options of {spec.model.id}"
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(raw) - known):
            raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        # The process launcher runs no image and finds the cache through spec.env.
        required = ("image", "hub_dir") if raw.get("launcher", "docker") == "docker" else ()
        for required_key in required:
            if not raw.get(required_key):
                raise ConfigError(f"{where}: {required_key!r} is required")
        raw.setdefault("image", "")
        raw.setdefault("hub_dir", "")
        raw["args"] = tuple(str(arg) for arg in raw.get("args", ()))
        try:
            # The catalog's arguments were checked strictly when it loaded; the configuration's
            # may be any vLLM flag, less the ones ocrd sets itself.
            check_managed_flags(where, raw["args"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        share = raw.get("gpu_memory_utilization")
        if share is not None and not 0 < float(share) <= 1:
            raise ConfigError(f"{where}: gpu_memory_utilization {share} is not in (0, 1]")
        if raw.get("env") and "HF_HUB_OFFLINE" in raw["env"]:
            raise ConfigError(f"{where}: set offline, not env HF_HUB_OFFLINE")
        return cls(**raw)


@dataclass(frozen=True)
class ContainerConfig:
    """What ``containers.create`` gets, and its hash (the ``ocrd.config-hash`` label)."""

    image: str
    command: list[str]
    environment: dict[str, str]
    volumes: dict[str, dict[str, str]]
    labels: dict[str, str]
    device_requests: list[dict[str, Any]]
    host_port: int | None
    ipc_mode: str | None
    shm_size: str | None
    user: str | None
    config_hash: str

    def create_kwargs(self, name: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            image=self.image, command=self.command, name=name, environment=self.environment,
            volumes=self.volumes, labels=self.labels,
            # Published on loopback only: the daemon is the one gateway to the model.
            ports={PORT_KEY: ("127.0.0.1", self.host_port)},
            # An init as PID 1 forwards SIGTERM (vLLM's Python would ignore it) and reaps.
            init=True, detach=True,
        )
        if self.device_requests:
            kwargs["device_requests"] = self.device_requests
        if self.ipc_mode:
            kwargs["ipc_mode"] = self.ipc_mode
        if self.shm_size:
            kwargs["shm_size"] = self.shm_size
        if self.user:
            kwargs["user"] = self.user
        return kwargs


def container_config(spec: RunnerSpec, options: ContainerOptions, image_id: str) -> ContainerConfig:
    """The container for ``spec``; ``image_id`` is the local image's id (a re-tagged image is
    a different container)."""
    hf_home = container_hf_home(options)
    volumes, hub_inside = cache_mount(options, hf_home)
    environment = {k: v for k, v in spec.env.items() if k not in _HOST_ONLY_ENV}
    environment.update(options.env)
    environment.update({"HF_HOME": hf_home, "HF_HUB_CACHE": hub_inside,
                        # vLLM reports usage to its authors unless told not to; ocrd stays offline.
                        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    if options.offline or spec.env.get("HF_HUB_OFFLINE") == "1":
        # Everything is in the cache: without this vLLM spends minutes on retries when the Hub is
        # unreachable, and may re-download what the host already has.
        environment["HF_HUB_OFFLINE"] = "1"
    device_ids = gpu_device_ids(spec, options)
    command = vllm_command(spec, options)
    device_requests: list[dict[str, Any]] = (
        [{"Driver": "", "DeviceIDs": device_ids, "Capabilities": [["gpu"]]}] if device_ids else []
    )
    ipc_mode = None if options.shm_size else "host"
    shaping = {
        "image_id": image_id,
        "command": command,
        "environment": environment,
        "volumes": volumes,
        "device_requests": device_requests,
        "host_port": options.host_port,
        "ipc_mode": ipc_mode,
        "shm_size": options.shm_size,
        "user": options.user,
        "model": spec.model.id,
        "instance": options.instance,
    }
    config_hash = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
    labels = {**options.labels, MANAGED_LABEL: "1", MODEL_LABEL: spec.model.id,
              INSTANCE_LABEL: options.instance, CONFIG_HASH_LABEL: config_hash}
    return ContainerConfig(
        image=options.image, command=command, environment=environment, volumes=volumes,
        labels=labels, device_requests=device_requests, host_port=options.host_port,
        ipc_mode=ipc_mode, shm_size=options.shm_size, user=options.user,
        config_hash=config_hash,
    )


def vllm_command(spec: RunnerSpec, options: ContainerOptions, *, host: str = "0.0.0.0",
                 port: int = CONTAINER_PORT) -> list[str]:
    """Arguments after the image's ``vllm serve`` entrypoint: the model positionally (newer
    vLLMs refuse ``--model`` with ``serve``), then the flags ocrd owns, then the catalog's.
    The process launcher passes the same with its own ``host`` and ``port``."""
    command = [options.model or spec.model.id,
               "--served-model-name", options.served_model_name or spec.model.id,
               "--host", host, "--port", str(port)]
    if options.revision:
        command += ["--revision", options.revision]
    if options.gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
    return command + list(options.args)


def gpu_device_ids(spec: RunnerSpec, options: ContainerOptions) -> list[str]:
    """The GPU to request for the container ([] on CPU): the planner's UUID or index."""
    if not spec.device.startswith("cuda"):
        return []
    if options.gpu:
        return [options.gpu]
    _, _, index = spec.device.partition(":")
    return [index or "0"]


def container_hf_home(options: ContainerOptions) -> str:
    """Where the cache goes inside: the home the image's user would look in. HF_HOME is set to
    it as well, so any image finds it."""
    if options.container_hf_home:
        return options.container_hf_home
    name = (options.user or "root").split(":")[0]
    if name in ("root", "0"):
        return ROOT_HF_HOME
    if name.isdigit():  # a bare uid has no home in the image
        return "/cache/huggingface"
    return f"/home/{name}/.cache/huggingface"


def cache_mount(options: ContainerOptions, inside: str) -> tuple[dict[str, dict[str, str]], str]:
    """The bind mount of the shared cache, and the hub directory's path inside the container."""
    hub = PurePosixPath(options.hub_dir)
    home = PurePosixPath(options.hf_home) if options.hf_home else None
    if home is not None and hub.is_relative_to(home):
        # Read-write: vLLM writes remote code (HF_MODULES_CACHE) and, online, new downloads.
        return {str(home): {"bind": inside, "mode": "rw"}}, str(PurePosixPath(inside) / hub.relative_to(home))
    hub_inside = f"{inside}/hub"
    return {str(hub): {"bind": hub_inside, "mode": "rw"}}, hub_inside


def container_name(model_id: str) -> str:
    """``ocrd-<model>-<6 hex>``: readable in `docker ps`, unique per start."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", model_id).strip("-.") or "model"
    return f"ocrd-{slug[:60]}-{secrets.token_hex(3)}"
