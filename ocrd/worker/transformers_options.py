"""The transformers runner's ``--options`` and where its model lives in the Hugging Face cache.

Parsing is pure (no torch, no transformers) so that a bad option is a usage error (exit 2) that
comes at once. The options contract is documented in ``ocrd.worker.transformers_worker``.

The cache is read straight from the file system, in huggingface_hub's layout
(``<cache>/models--ORG--NAME/{refs/<branch>, snapshots/<commit>/<file>, blobs/}``), before
huggingface_hub is imported: whether the snapshot is complete decides whether the process runs
with ``HF_HUB_OFFLINE=1``, which huggingface_hub reads once, at import.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrd.worker.engines import EngineOptionsError

log = logging.getLogger("ocrd.worker.transformers")

LOADERS = ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")
QUANTIZATIONS = ("none", "8bit", "4bit")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)\Z")  # \Z: $ also matches before a final newline
_COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
_KNOWN = {
    "repo_id", "revision", "cache_dir", "offline", "loader", "trust_remote_code", "quantization",
    "dtype", "device", "attn_implementation", "processor_kwargs", "generation", "stop",
    "skip_special_tokens", "api", "transformers_version", "processor_options",
}
# How the runner drives a model (the catalog's ``api``). Models with their own Python API
# (moondream's caption/query, DeepSeek-OCR's infer, InternVL's chat) are refused at load time
# with a clear message rather than driven through a chat template they do not have.
APIS = ("chat", "got_ocr2", "moondream", "deepseek_ocr", "internvl_chat")
SUPPORTED_APIS = ("chat", "got_ocr2")
DEFAULT_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class TransformersOptions:
    repo_id: str
    revision: str = "main"
    cache_dir: str = ""
    offline: bool = True
    loader: str = "AutoModelForImageTextToText"
    trust_remote_code: bool = False
    quantization: str = "none"
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str = "auto"
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    skip_special_tokens: bool = True
    api: str = "chat"
    # A PEP 440 specifier the model's code needs (dots.ocr: "<5"); None: any version.
    transformers_version: str | None = None
    # Keyword arguments for AutoProcessor.from_pretrained (Phi-3.5-vision: num_crops).
    processor_options: dict[str, Any] = field(default_factory=dict)

    @property
    def max_new_tokens(self) -> int:
        return int(self.generation.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

    @property
    def generation_extras(self) -> dict[str, Any]:
        """Generation defaults beyond the ones requests override (e.g. ``min_new_tokens``)."""
        return {k: v for k, v in self.generation.items() if k not in ("max_new_tokens", "temperature", "top_p")}


def default_cache_dir() -> str:
    """huggingface_hub's own default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _get(options: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = options.get(name, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise EngineOptionsError(f"transformers option {name!r} must be a {expected}, got {value!r}")
    return value


def _choice(options: dict[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = _get(options, name, str, default)
    if value not in choices:
        raise EngineOptionsError(f"transformers option {name!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _generation(options: dict[str, Any]) -> dict[str, Any]:
    generation = dict(_get(options, "generation", dict, {}))
    checks = {
        "max_new_tokens": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
        "temperature": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0"),
        "top_p": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1, "in (0, 1]"),
    }
    for key, (valid, what) in checks.items():
        if key in generation and generation[key] is not None and not valid(generation[key]):
            raise EngineOptionsError(f"transformers option generation.{key} must be {what}, got {generation[key]!r}")
    return {k: v for k, v in generation.items() if v is not None}


def parse_options(options: dict[str, Any]) -> TransformersOptions:
    """Validated options; ``EngineOptionsError`` naming the offending key otherwise."""
    repo_id = options.get("repo_id")
    if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1:
        raise EngineOptionsError(f"transformers option 'repo_id' must be like 'org/name', got {repo_id!r}")
    device = _get(options, "device", str, "auto")
    if not _DEVICE.match(device):
        raise EngineOptionsError(f"transformers option 'device' must be cpu, cuda, cuda:N or auto; got {device!r}")
    stop = _get(options, "stop", list, [])
    if not all(isinstance(s, str) and s for s in stop):
        raise EngineOptionsError("transformers option 'stop' must be a list of non-empty strings")
    for name in sorted(set(options) - _KNOWN):  # a newer daemon may send options this runner lacks
        log.warning("ignoring unknown transformers option %r", name)
    return TransformersOptions(
        repo_id=repo_id.strip(),
        revision=_get(options, "revision", str, "main") or "main",
        cache_dir=_get(options, "cache_dir", str, "") or default_cache_dir(),
        offline=_get(options, "offline", bool, True),
        loader=_choice(options, "loader", LOADERS, "AutoModelForImageTextToText"),
        trust_remote_code=_get(options, "trust_remote_code", bool, False),
        quantization=_choice(options, "quantization", QUANTIZATIONS, "none"),
        dtype=_choice(options, "dtype", DTYPES, "auto"),
        device=device,
        attn_implementation=_choice(options, "attn_implementation", ATTENTION, "auto"),
        processor_kwargs=dict(_get(options, "processor_kwargs", dict, {})),
        generation=_generation(options),
        stop=tuple(stop),
        skip_special_tokens=_get(options, "skip_special_tokens", bool, True),
        api=_choice(options, "api", APIS, "chat"),
        transformers_version=_get(options, "transformers_version", (str, type(None)), None),
        processor_options=dict(_get(options, "processor_options", dict, {})),
    )


# --- the cache -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A model's snapshot folder in the cache, if there is one, and what it lacks."""

    repo_dir: Path
    path: Path | None  # snapshots/<commit>, None when the revision is not in the cache
    commit: str | None
    missing: tuple[str, ...] = ()  # files the snapshot needs but lacks (or whose blobs are gone)

    @property
    def complete(self) -> bool:
        return self.path is not None and not self.missing


def repo_folder(cache_dir: str, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def find_snapshot(cache_dir: str, repo_id: str, revision: str) -> Snapshot:
    """Where ``repo_id`` at ``revision`` (a commit or a branch/tag) lies in the cache."""
    repo_dir = repo_folder(cache_dir, repo_id)
    commit = revision if _COMMIT.match(revision) else _read_ref(repo_dir, revision)
    if commit is None or not (repo_dir / "snapshots" / commit).is_dir():
        return Snapshot(repo_dir, None, commit)
    path = repo_dir / "snapshots" / commit
    return Snapshot(repo_dir, path, commit, tuple(missing_files(path)))


def _read_ref(repo_dir: Path, revision: str) -> str | None:
    try:
        commit = (repo_dir / "refs" / revision).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return commit if _COMMIT.match(commit) else None


def missing_files(snapshot: Path) -> list[str]:
    """Files a loadable snapshot needs that are absent (a dangling symlink counts as absent)."""
    if not (snapshot / "config.json").exists():
        return ["config.json"]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = snapshot / index_name
        if index.exists():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return [index_name]
            return sorted(name for name in shards if not (snapshot / name).exists())
    if any((snapshot / name).exists() for name in ("model.safetensors", "pytorch_model.bin")):
        return []
    return ["model.safetensors"]
