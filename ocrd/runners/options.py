"""Runner options: what a runner of an engine needs beyond the catalog entry, from the settings.

The options travel to the runner as ``--options JSON``; their shapes are documented next to the
engines that read them (``ocrd/worker/builtin_worker.py``, ``ocrd/worker/transformers_worker.py``,
``ocrd/runners/vllm/container_spec.py`` for vLLM, whose runners read them in the daemon).

A vLLM server's *placement* (device, GPU, ``gpu_memory_utilization``) is the planner's choice of
the moment it started; its container carries it in labels (``VllmPlacement``), so that after a
restart ocrd rebuilds the very spec the container was made from, and the config hash compares
only what the configuration decides (docs/vllm.md, "After a restart").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrd.cache.inventory import Snapshot
from ocrd.catalog import CatalogEntry
from ocrd.catalog.facts import TransformersFacts
from ocrd.config.settings import Settings, vllm_instance
from ocrd.errors import EngineUnavailable


def builtin_options(entry: CatalogEntry, settings: Settings) -> dict[str, Any]:
    options = dict(entry.engine_options.get("builtin", {}))
    builtin = settings.builtin
    options.setdefault("layout", builtin.layout)
    options.setdefault("orientation", builtin.orientation)
    options.setdefault("preprocess", builtin.preprocess)
    if options.get("backend") == "ppocr":
        options.setdefault("det_limit_side_len", builtin.ppocr_det_limit_side_len)
    elif options.get("backend") == "tesseract":
        options.setdefault("tesseract_cmd", builtin.tesseract_cmd)
        options.setdefault("languages", builtin.tesseract_languages)
        options.setdefault("psm", builtin.tesseract_psm)
    return options


def transformers_options(
    entry: CatalogEntry,
    settings: Settings,
    snapshot: Snapshot,
    hub_dir: Path,
    device: str,
    *,
    quantization: str,
) -> dict[str, Any]:
    """The ``--options`` of a transformers runner (documented in transformers_worker.py).

    ``device`` is the device as the runner sees it (``cuda:0``: its one visible GPU, or ``cpu``)
    and ``quantization`` the planner's choice (``none``, ``8bit`` or ``4bit``; the planner resolves
    ``auto``, see ``ocrd.planning.planner``)."""
    if quantization not in ("none", "8bit", "4bit"):
        raise ValueError(f"quantization must be decided by the planner, got {quantization!r}")
    facts = entry.transformers or TransformersFacts()
    config = settings.transformers
    if facts.trust_remote_code and not config.allow_remote_code:
        raise EngineUnavailable(
            f"{entry.id} runs Python code from its repository (trust_remote_code) and "
            f"transformers.allow_remote_code is off"
        )
    on_gpu = device.startswith("cuda")
    dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    attn: str = config.attn_implementation
    if attn == "auto":
        attn = facts.attn_implementation or "auto"
    return {
        "repo_id": entry.id,
        "revision": snapshot.commit,
        "cache_dir": str(hub_dir),
        "offline": snapshot.complete,
        "loader": facts.loader,
        "api": facts.api,
        "trust_remote_code": facts.trust_remote_code,
        "transformers_version": facts.transformers_version,
        "quantization": quantization,
        "dtype": dtype,
        "device": device,
        "attn_implementation": attn,
        "processor_options": dict(facts.processor_options),
        "generation": {**config.generation, "max_new_tokens": config.max_new_tokens, **_sampling(entry)},
        "stop": list(entry.stop),
    }


def _sampling(entry: CatalogEntry) -> dict[str, Any]:
    """The model's default sampling, in generate()'s names."""
    names = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_new_tokens"}
    return {names[key]: value for key, value in entry.sampling.items() if key in names}


# --- vLLM ----------------------------------------------------------------------------------------

DEVICE_LABEL = "ocrd.device"
GPU_LABEL = "ocrd.gpu"
GPU_SHARE_LABEL = "ocrd.gpu-memory-utilization"


@dataclass(frozen=True)
class VllmPlacement:
    """Where a vLLM server runs: ``cpu`` or ``cuda:N`` (NVML's index), the GPU's UUID, and its
    share of that GPU (None on the CPU)."""

    device: str
    gpu_uuid: str = ""
    gpu_memory_utilization: float | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def labels(self) -> dict[str, str]:
        labels = {DEVICE_LABEL: self.device}
        if self.on_gpu:
            labels[GPU_LABEL] = self.gpu_uuid
            labels[GPU_SHARE_LABEL] = f"{self.gpu_memory_utilization:g}"
        return labels

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> VllmPlacement:
        """The placement a container was started with; ValueError when its labels lack one."""
        device = labels.get(DEVICE_LABEL, "")
        if device == "cpu":
            return cls("cpu")
        if not device.startswith("cuda:") or not labels.get(GPU_LABEL):
            raise ValueError(f"its labels do not say where it runs ({DEVICE_LABEL}={device!r})")
        return cls(device, labels[GPU_LABEL], float(labels.get(GPU_SHARE_LABEL) or 0) or None)


def vllm_options(entry: CatalogEntry, settings: Settings, snapshot: Snapshot, hub_dir: Path,
                 placement: VllmPlacement, extra_args: tuple[str, ...]) -> dict[str, Any]:
    """The options of a vLLM runner (documented in ``ocrd/runners/vllm/container_spec.py``): the
    cached snapshot's revision, the catalog's ``vllm serve`` arguments then ``extra_args`` (the
    configuration's: ``vllm.args``, then ``[models.X] vllm_args``, as ``ocrd.core.wishes``
    resolves them; vLLM takes the last of a repeated flag, so the model's own win), the planner's
    device and share, this daemon's instance, and the launcher that runs it."""
    config = settings.vllm
    options: dict[str, Any] = {
        "launcher": config.launcher,
        "image": config.image,
        "pull": config.pull_images,
        "hub_dir": str(Path(hub_dir).absolute()),
        "hf_home": str(host_hf_home()),
        "model": entry.id,
        "revision": snapshot.commit,
        "args": [*(entry.vllm.args if entry.vllm else ()), *extra_args],
        "env": dict(config.env),
        "offline": snapshot.complete,
        "instance": vllm_instance(settings),
        "labels": placement.labels(),
        "load_timeout": settings.scheduler.load_timeout,
        "request_timeout": settings.http.request_timeout,
    }
    if placement.on_gpu:
        options["gpu"] = placement.gpu_uuid
        options["gpu_memory_utilization"] = placement.gpu_memory_utilization
    return options


def host_hf_home(environ: Mapping[str, str] | None = None) -> Path:
    """The host's HF_HOME as huggingface_hub resolves it ($HF_HOME, else the XDG cache's
    ``huggingface``): a container gets it mounted whole when the hub cache is inside it."""
    env = os.environ if environ is None else environ
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser().absolute()
