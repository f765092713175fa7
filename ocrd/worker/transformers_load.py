"""Loading a model for the transformers runner: every check that can fail runs before the weights.

Order of a load, and why: the cache is checked first (a missing model is the commonest mistake and
its fix is ``ocrctl pull``); then the device, the packages quantization needs, the architecture
and the layers to quantize, all from ``config.json`` and a weightless skeleton of the model on the
``meta`` device — so that every one of these failures is one clear line, seconds after start,
instead of a traceback after minutes of reading weights. Only then do the weights load, with
``device_map`` set at load time because bitsandbytes-quantized modules cannot be moved later.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ocrd.errors import ModelLoadFailed
from ocrd.worker.transformers_options import Snapshot, TransformersOptions

log = logging.getLogger("ocrd.worker.transformers")

_QUANT_PACKAGES = ("bitsandbytes", "accelerate")  # what transformers' bitsandbytes path imports


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda:N"
    dtype_name: str  # "float32", "bfloat16", "float16"
    attn_implementation: str | None  # None: transformers' default (sdpa, or eager where unsupported)


def not_in_cache_message(model_id: str, options: TransformersOptions, snapshot: Snapshot) -> str:
    where = f"{options.repo_id}@{options.revision}"
    if snapshot.path is None:
        return (f"{where} is not in the Hugging Face cache at {options.cache_dir}; "
                f"download it first: ocrctl pull {model_id}")
    missing = ", ".join(snapshot.missing[:3]) + (" ..." if len(snapshot.missing) > 3 else "")
    return (f"{where} is only partly in the Hugging Face cache at {options.cache_dir} (missing: {missing}); "
            f"finish the download: ocrctl pull {model_id}")


def placement(options: TransformersOptions) -> Placement:
    """Device, dtype and attention implementation; ModelLoadFailed for a device this host lacks."""
    import torch

    device = options.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda"):
        _check_cuda(device, torch)
    dtype_name = options.dtype
    if dtype_name == "auto":  # bf16 where the GPU has it; CPUs compute float32 fastest and exactly
        on_gpu = device.startswith("cuda")
        dtype_name = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if on_gpu else "float32"
    return Placement(device, dtype_name, _attention(options.attn_implementation, device))


def _check_cuda(device: str, torch: Any) -> None:
    if not torch.cuda.is_available():
        raise ModelLoadFailed(
            f"device {device} was asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use device 'cpu' or install a CUDA build of torch"
        )
    index = int(device.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ModelLoadFailed(f"device {device} was asked for, but only {torch.cuda.device_count()} GPU(s) are visible")


def _attention(requested: str, device: str) -> str | None:
    if requested == "auto":
        return None
    if requested == "flash_attention_2":
        if not device.startswith("cuda") or importlib.util.find_spec("flash_attn") is None:
            log.warning("flash_attention_2 needs a GPU and the flash-attn package; using sdpa/eager instead")
            return None
    return requested  # "sdpa" falls back to eager inside transformers where a model lacks it


def check_quantization_packages(quantization: str) -> None:
    """One clear line when bitsandbytes or accelerate cannot be imported, before anything loads."""
    if quantization == "none":
        return
    for package in _QUANT_PACKAGES:
        try:
            importlib.import_module(package)
        except Exception as exc:  # a broken install raises anything, not only ImportError
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelLoadFailed(
                f"{quantization} quantization needs the {package} package, which cannot be imported here "
                f"({type(exc).__name__}: {reason}); install it (pip install {package}) or load with quantization 'none'"
            ) from None


def model_class(config: Any, options: TransformersOptions) -> Any:
    """The auto class to load with; ModelLoadFailed when it cannot load this architecture."""
    import transformers

    auto = getattr(transformers, options.loader)
    auto_map = getattr(config, "auto_map", None) or {}
    if options.trust_remote_code and options.loader in auto_map:
        return auto
    if type(config) in auto._model_mapping:
        return auto
    architecture = (getattr(config, "architectures", None) or [getattr(config, "model_type", "?")])[0]
    if options.loader == "AutoModelForImageTextToText":
        hint = "" if options.loader not in auto_map else " without trust_remote_code"
        raise ModelLoadFailed(
            f"config.json names architecture {architecture}, which transformers "
            f"{transformers.__version__} cannot load as image-text-to-text{hint}"
        )
    raise ModelLoadFailed(
        f"config.json names architecture {architecture}, which transformers {transformers.__version__} "
        f"cannot load with {options.loader}" + ("" if options.trust_remote_code else " (without trust_remote_code)")
    )


@dataclass(frozen=True)
class QuantPlan:
    """What bitsandbytes will do to a model, decided before its weights load."""

    layers: int  # linear layers that become Linear8bitLt / Linear4bit
    # Kept in ``dtype``: the output head, the model's fp32 modules, and everything beside the
    # language model (vision tower, projector). Vision towers are small next to the language model
    # and do not always survive int8 kernels (GOT-OCR2's feeds 4-D tensors to its linear layers,
    # which bitsandbytes' CUDA int8 matmul refuses), so only the language model is quantized.
    skip_modules: tuple[str, ...]


def quantization_config(quantization: str, dtype: Any, plan: QuantPlan | None) -> Any:
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    skip = {"llm_int8_skip_modules": list(plan.skip_modules)} if plan and plan.skip_modules else {}
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, **skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4", **skip)


def plan_quantization(auto: Any, config: Any, options: TransformersOptions) -> QuantPlan | None:
    """The quantization plan, from a weightless skeleton of the model; raises when it cannot be."""
    if options.quantization == "none":
        return None
    import torch

    existing = getattr(config, "quantization_config", None)
    if existing:
        method = existing.get("quant_method", "?") if isinstance(existing, dict) else type(existing).__name__
        raise ModelLoadFailed(
            f"{options.repo_id} is already quantized ({method}); load it with quantization 'none'"
        )
    with torch.device("meta"):
        skeleton = auto.from_config(config, trust_remote_code=options.trust_remote_code)
    skip = _default_skips(skeleton) | set(beside_language_model(skeleton))
    layers = _quantizable_layers(skeleton, skip)
    if not layers:
        raise ModelLoadFailed(
            f"{options.repo_id} has no linear layers bitsandbytes can quantize "
            f"({type(skeleton).__name__}); load it with quantization 'none'"
        )
    return QuantPlan(len(layers), tuple(sorted(skip)))


def beside_language_model(model: Any) -> list[str]:
    """Modules with linear layers that are not part of the language model: the vision tower, the
    projector (``model.visual``, ``model.vision_tower``, ``model.multi_modal_projector``...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    path = next((name for name, module in model.named_modules() if module is decoder), "") if decoder else ""
    beside, node, prefix = [], model, ""
    for part in path.split(".") if path else []:
        for name, child in node.named_children():
            if name != part and _linear_layers(child):
                beside.append(prefix + name)
        node, prefix = getattr(node, part), prefix + part + "."
    return beside


def _default_skips(model: Any) -> set[str]:
    """What transformers itself keeps unquantized: the output head (and tied weights), fp32 modules."""
    skip = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return skip | set(get_keys_to_not_convert(model))
    except Exception:  # private helper: without it, at least the output head stays unquantized
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return skip | {name for name, module in model.named_modules() if module is output and output is not None}


def _linear_layers(model: Any) -> list[str]:
    """The layers transformers' bitsandbytes integration replaces: nn.Linear and GPT-2's Conv1D."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear or isinstance(module, Conv1D)]


def _quantizable_layers(model: Any, skip: set[str]) -> list[str]:
    patterns = sorted(skip)
    return [name for name in _linear_layers(model) if _converts(name, patterns)]


def _converts(name: str, patterns: list[str]) -> bool:
    """transformers' own rule where this version has it, else the same test written here."""
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module
    except ImportError:
        return not any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)
    return bool(should_convert_module(name, patterns))


def load_weights(auto: Any, options: TransformersOptions, place: Placement, hub_kwargs: dict[str, Any],
                 plan: QuantPlan | None) -> Any:
    """The model on its device, in eval mode."""
    import torch

    dtype = getattr(torch, place.dtype_name)
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": place.device},
                              "trust_remote_code": options.trust_remote_code, **hub_kwargs}
    if place.attn_implementation is not None:
        kwargs["attn_implementation"] = place.attn_implementation
    quant = quantization_config(options.quantization, dtype, plan)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if options.quantization == "8bit":
        _say_once("bitsandbytes.autograd._functions", "MatMul8bitLt")
    model = auto.from_pretrained(options.repo_id, **kwargs)
    return model.eval()


class _OnceFilter(logging.Filter):
    """Lets the first record containing ``needle`` through and drops the rest."""

    def __init__(self, needle: str):
        super().__init__()
        self.needle = needle
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.needle not in record.getMessage():
            return True
        first, self.seen = not self.seen, True
        return first


def _say_once(logger_name: str, needle: str) -> None:
    # bitsandbytes logs "inputs will be cast to float16" for every 8-bit matmul on the CPU: once
    # per linear layer per token would bury the runner's log.
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _OnceFilter) and f.needle == needle for f in logger.filters):
        logger.addFilter(_OnceFilter(needle))


def model_summary(model: Any) -> dict[str, Any]:
    """Layer classes and parameter dtypes: the evidence that quantization really happened."""
    layers = Counter(type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__)
    dtypes = Counter(str(p.dtype).removeprefix("torch.") for p in model.parameters())
    return {
        "architecture": type(model).__name__,
        "linear_layers": dict(sorted(layers.items())),
        "parameter_dtypes": dict(sorted(dtypes.items())),
        "weights_bytes": int(model.get_memory_footprint()),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


def cuda_memory_bytes(device: str) -> int | None:
    """What this process holds on ``device``, as NVML counts it (CUDA context and kernels
    included, ~0.7 GiB more than the allocator on an H100); the caching allocator's peak
    reservation when NVML is not installed (nvidia-ml-py) or does not list this process."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    measured = nvml_process_bytes(index, os.getpid())
    return measured if measured is not None else int(torch.cuda.max_memory_reserved(torch.device(device)))


def nvml_process_bytes(index: int, pid: int) -> int | None:
    """GPU memory NVML attributes to ``pid`` on device ``index`` (CUDA_VISIBLE_DEVICES order
    differs from NVML's only when the variable reorders devices; then this returns None). The
    daemon starts a GPU runner with ``CUDA_VISIBLE_DEVICES=<the planned GPU's UUID>``: that one
    device is found by its UUID."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    by_uuid = index == 0 and visible.startswith(("GPU-", "MIG-")) and "," not in visible
    if visible not in ("", str(index)) and not by_uuid:
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handle = (pynvml.nvmlDeviceGetHandleByUUID(visible) if by_uuid
                      else pynvml.nvmlDeviceGetHandleByIndex(index))
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and process.usedGpuMemory:
                    return int(process.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        log.warning("NVML could not measure this runner's GPU memory: %s", exc)
    return None
