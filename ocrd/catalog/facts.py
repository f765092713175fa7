"""Engine facts of a catalog entry: how transformers loads a model, how vLLM serves it.

They live in ``CatalogEntry.engine_options[engine]`` because that dict is what a runner of that
engine receives; the dataclasses here are the typed, checked view (``entry.transformers``,
``entry.vllm``). ``models.toml`` documents where each fact comes from.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Loader classes the transformers runner knows how to call. AutoModelForVision2Seq is gone in
# transformers 5, so it is not accepted (AutoModelForImageTextToText replaces it).
LOADERS = ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")
# How the runner drives the model once loaded:
#   chat          processor.apply_chat_template + model.generate (the common case)
#   got_ocr2      processor(image, **preset.processor_kwargs), generate with stop_strings; no text
#   moondream     model.caption/query/detect/point (processor_kwargs["method"]); no chat template
#   deepseek_ocr  model.infer(tokenizer, prompt, image_file, **preset.processor_kwargs)
#   internvl_chat model.chat(tokenizer, pixel_values, question, generation_config), own tiling
APIS = ("chat", "got_ocr2", "moondream", "deepseek_ocr", "internvl_chat")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
_SPECIFIER = re.compile(r"^\s*(==|!=|<=|>=|<|>|~=)\s*\d+(\.\d+)*\s*$")

# vLLM flags that take no value. Anything else starting with "--" takes exactly one.
VLLM_BOOLEAN_FLAGS = frozenset({
    "--trust-remote-code", "--no-enable-prefix-caching", "--enable-prefix-caching",
    "--enforce-eager", "--disable-log-requests", "--no-enable-chunked-prefill",
})
# Flags ocrd sets itself when it starts the container (model, port, name, memory share): a
# catalog entry that set them would fight the planner.
VLLM_MANAGED_FLAGS = frozenset({
    "--model", "--host", "--port", "--served-model-name", "--gpu-memory-utilization",
    "--kv-cache-memory-bytes", "--download-dir",
})
# What a user sets instead, for the refusal of such a flag in the configuration.
_INSTEAD = {
    "--gpu-memory-utilization": ': fix it per model with [models."ID"] gpu_memory_utilization',
    "--kv-cache-memory-bytes": ': fix the share per model with [models."ID"] gpu_memory_utilization',
    "--download-dir": ": the shared cache is cache.hub_dir",
}


def managed_flag(arg: str) -> str | None:
    """The flag ocrd sets itself that ``arg`` gives (``--flag``, ``--flag=value``,
    ``--flag.key``, underscores for dashes, as vLLM's parser accepts them), else None."""
    flag = arg.partition("=")[0].split(".")[0].replace("_", "-")
    return flag if flag in VLLM_MANAGED_FLAGS else None


def check_managed_flags(where: str, args: Iterable[str]) -> None:
    """ValueError naming the first of ``args`` that ocrd sets itself: given twice, vLLM would
    take the last one, and ocrd would proxy to the wrong port or mis-account the GPU."""
    for arg in args:
        if flag := managed_flag(str(arg)):
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}{flag} is set by ocrd itself{_INSTEAD.get(flag, '')}")


@dataclass(frozen=True)
class TransformersFacts:
    loader: str = "AutoModelForImageTextToText"
    trust_remote_code: bool = False
    # A PEP 440 specifier ("<5", ">=4.49", "==4.46.3"), or None when no constraint is known.
    transformers_version: str | None = None
    # The attention the model's authors use or need; None: transformers' default (sdpa).
    attn_implementation: str | None = None
    # A pinned Hub revision (branch, tag or commit) to load; None: the cached default.
    revision: str | None = None
    # Only when a source states it; the planner estimates otherwise.
    min_vram_gb_8bit: float | None = None
    api: str = "chat"
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    # Keyword arguments for AutoProcessor.from_pretrained (Phi-3.5-vision: num_crops).
    processor_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VllmFacts:
    # Extra `vllm serve` arguments, flag/value pairs or boolean flags, in order.
    args: tuple[str, ...] = ()
    # The first vLLM release that serves the model, when a source says so.
    min_version: str | None = None
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    # Fields the proxy adds to each OpenAI request body for this model (vllm_xargs, ...).
    request_extra: Mapping[str, Any] = field(default_factory=dict)


def transformers_facts(model_id: str, raw: Mapping[str, Any]) -> TransformersFacts:
    where = f"catalog entry {model_id}, [transformers]"
    facts = _build(TransformersFacts, where, raw)
    if facts.loader not in LOADERS:
        raise ValueError(f"{where}: loader {facts.loader!r} is not one of {list(LOADERS)}")
    if facts.api not in APIS:
        raise ValueError(f"{where}: api {facts.api!r} is not one of {list(APIS)}")
    if facts.attn_implementation not in (None, *ATTN_IMPLEMENTATIONS):
        raise ValueError(f"{where}: attn_implementation {facts.attn_implementation!r} is unknown")
    if facts.transformers_version is not None:
        check_specifier(where, facts.transformers_version)
    return facts


def vllm_facts(model_id: str, raw: Mapping[str, Any]) -> VllmFacts:
    where = f"catalog entry {model_id}, [vllm]"
    raw = dict(raw)
    raw["args"] = tuple(raw.get("args", ()))
    facts = _build(VllmFacts, where, raw)
    check_vllm_args(where, facts.args)
    return facts


def check_specifier(where: str, spec: str) -> None:
    """ValueError unless ``spec`` is a comma-separated list of simple version clauses."""
    if not all(_SPECIFIER.match(clause) for clause in spec.split(",")):
        raise ValueError(f"{where}: {spec!r} is not a version specifier like '<5' or '>=4.49'")


def check_vllm_args(where: str, args: tuple[str, ...]) -> None:
    """ValueError unless ``args`` are boolean flags or flag/value pairs, none of them one that
    ocrd manages, and every JSON-looking value parses."""
    i = 0
    while i < len(args):
        flag = args[i]
        if not isinstance(flag, str) or not flag.startswith("--"):
            raise ValueError(f"{where}: expected a --flag at position {i} of args, got {flag!r}")
        check_managed_flags(where, (flag,))
        if flag in VLLM_BOOLEAN_FLAGS:
            i += 1
            continue
        if i + 1 >= len(args) or args[i + 1].startswith("--"):
            raise ValueError(f"{where}: {flag} needs a value (or add it to VLLM_BOOLEAN_FLAGS)")
        value = args[i + 1]
        if value[:1] in "{[":
            try:
                json.loads(value)
            except ValueError as exc:
                raise ValueError(f"{where}: the value of {flag} is not JSON: {exc}") from None
        i += 2


def _build(cls: type, where: str, raw: Mapping[str, Any]) -> Any:
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return cls(**raw)
