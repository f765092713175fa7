"""The daemon's side of vLLM containers: one shared Docker client, and adoption at start-up.

``DockerRunner`` (``ocrd.runners.vllm.container``) runs one container; this is what the daemon needs around
them. Every runner shares one ``docker.DockerClient`` (connected off the event loop when the daemon
starts; a runner made while there is none connects by itself). Before the daemon announces READY,
``adopt_containers`` goes through the containers this daemon instance left (``vllm.instance``,
see ``ocrd.config.settings.vllm_instance``) — after a crash, a SIGKILL or an upgrade — keeps those that ocrd
would start the same way now and that still answer, as READY models of the scheduler, and removes
the others. Docker being unreachable then is logged (a warning only when the configuration asks
for vLLM), never a failed start.

The placement of an adopted container (device, GPU, ``gpu_memory_utilization``) is the one it was
started with, read from its labels: planning it afresh would see the container's own memory as
taken and choose a different share, so the config hash compares only what the configuration
decides (docs/vllm.md, "After a restart").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocrd.config.settings import Settings, vllm_instance
from ocrd.core.directory import ModelDirectory
from ocrd.core.scheduler import Scheduler
from ocrd.errors import OcrdError
from ocrd.planning.gpu import GpuProbe
from ocrd.planning.planner import Decision, allowed_gpus
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm import docker_host
from ocrd.runners.vllm.container import DockerRunner, adopt

log = logging.getLogger("ocrd.vllm")


class VllmContainers:
    def __init__(self, settings: Settings, directory: ModelDirectory, gpu: GpuProbe):
        self._settings = settings
        self._directory = directory
        self._gpu = gpu
        self._client: Any = None  # a docker.DockerClient once connected

    def apply_settings(self, settings: Settings) -> None:
        self._settings = settings

    def runner(self, spec: RunnerSpec) -> DockerRunner:
        return DockerRunner(spec, docker=self._client, gpu_probe=self._gpu)

    async def adopt_containers(self, scheduler: Scheduler) -> None:
        """Adopts or removes what this instance left on the Docker engine (see the module doc)."""
        instance = vllm_instance(self._settings)
        client = await asyncio.to_thread(docker_host.docker_client)
        if isinstance(client, str):
            # Hosts without Docker are common when vLLM is not used: only a configuration that
            # asks for vLLM warns now; a load that needs it fails saying why.
            level = logging.WARNING if _asks_for_vllm(self._settings) else logging.INFO
            log.log(level, "vLLM containers of instance %s not checked: %s", instance, client)
            return
        self._client = client
        allowed = await self._allowed_gpus()
        try:
            adoption = await adopt(lambda model, labels: self._spec_for(model, labels, allowed),
                                   instance=instance, docker=client, gpu_probe=self._gpu)
        except Exception as exc:  # the engine went away meanwhile: the next start tries again
            log.warning("vLLM containers of instance %s not checked: %s", instance, exc)
            return
        for line in adoption.removed:
            log.info("removed container %s", line)
        for runner in adoption.adopted:
            name = runner.container_name or "?"
            try:
                info = await scheduler.adopt(runner, adopted_decision(runner.spec, name),
                                             f"container {name}")
            except OcrdError as exc:
                log.warning("container %s not adopted: %s", name, exc.message)
                continue
            log.info("adopted container %s for %s: %s", name, info.id, info.state.value)

    def _spec_for(self, model_id: str, labels: dict[str, str], allowed: set[str]) -> RunnerSpec | None:
        if self._settings.vllm.launcher != "docker":
            raise ValueError(f"vllm.launcher is now {self._settings.vllm.launcher}")
        spec = self._directory.adopted_vllm_spec(model_id, labels)
        if spec is not None and spec.device.startswith("cuda") and spec.options.get("gpu") not in allowed:
            raise ValueError(f"its GPU {spec.options.get('gpu')} is not one ocrd may use now "
                             f"(gpu.devices, CUDA_VISIBLE_DEVICES)")
        return spec

    async def _allowed_gpus(self) -> set[str]:
        snapshot = await self._gpu.snapshot_async()
        gpus, _ = allowed_gpus(snapshot, self._settings.gpu.devices)
        return {gpu.uuid for gpu in gpus}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _asks_for_vllm(settings: Settings) -> bool:
    """The configuration names vLLM (``planner.engine``, a model's ``engine``) with the docker
    launcher: Docker is needed, not just of use."""
    if settings.vllm.launcher != "docker":
        return False
    return settings.planner.engine == "vllm" or any(
        model.engine == "vllm" for model in settings.models.values())


def adopted_decision(spec: RunnerSpec, name: str) -> Decision:
    """The scheduler's record of an adopted server: where it runs, as it was started."""
    share = float(spec.options.get("gpu_memory_utilization") or 0.0)
    where = spec.device if spec.device == "cpu" else f"{spec.device}, gpu_memory_utilization {share:g}"
    return Decision(
        model=spec.model.id, engine="vllm", device=spec.device, quantization="none",
        gpu_memory_utilization=share, estimated_bytes=0,
        reasons=(f"adopted the running container {name} after a restart of ocrd ({where}, "
                 f"as it was started)",),
        fits=True, gpu_uuid=str(spec.options.get("gpu") or ""),
    )
