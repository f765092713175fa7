"""The transformers engine: a Hugging Face model from the shared cache behind the chat API.

    python -m ocrd.worker --model-id ID --engine transformers --socket PATH --options JSON

Options (the daemon sends all of them; defaults in brackets):

* ``repo_id`` "org/name" (required), ``revision`` a 40-hex commit or a branch/tag ["main"],
  ``cache_dir`` the hub cache folder (HF_HUB_CACHE) [$HF_HUB_CACHE, else $HF_HOME/hub].
* ``offline`` [true]: never touch the network; a model not (completely) in the cache is an error
  naming ``ocrctl pull MODEL``. With false, a model missing from the cache may be downloaded by
  transformers. Either way a complete snapshot loads with ``HF_HUB_OFFLINE=1`` /
  ``local_files_only=True`` (the Hub being unreachable would otherwise cost minutes of retries).
* ``loader`` "AutoModelForImageTextToText" | "AutoModelForCausalLM" | "AutoModel"
  ["AutoModelForImageTextToText"]; ``trust_remote_code`` [false].
* ``quantization`` "none" | "8bit" | "4bit" ["none"]: bitsandbytes through ``BitsAndBytesConfig``
  (4-bit: nf4, compute in ``dtype``), for the language model's linear layers only: the output
  head and everything beside the language model (vision tower, projector) stay in ``dtype``.
  Checked before any weight loads: the packages import, the model is not quantized already, it
  has linear layers to quantize.
* ``dtype`` "auto" | "bfloat16" | "float16" | "float32" ["auto": bfloat16 on a GPU (float16 where
  it lacks bf16), float32 on the CPU].
* ``device`` "cpu" | "cuda" | "cuda:N" | "auto" ["auto": cuda:0 when torch sees a GPU]; passed as
  ``device_map`` at load time (bitsandbytes modules cannot be moved afterwards).
* ``attn_implementation`` "auto" | "sdpa" | "eager" | "flash_attention_2" ["auto": transformers'
  choice, sdpa or eager]; flash_attention_2 without a GPU or the flash-attn package falls back
  to auto with a warning.
* ``processor_kwargs`` {} : passed to every processor call (e.g. GOT-OCR2 ``{"format": true}``,
  Qwen ``{"max_pixels": ...}``).
* ``generation`` {}: defaults for requests: ``max_new_tokens`` [1024], ``temperature``, ``top_p``
  (a request's own values win; without any, the model's generation_config decides); any other
  key is a further ``generate()`` argument for every request, e.g. ``min_new_tokens`` (used by
  the tests so that random weights do not stop early) or ``repetition_penalty``. Unknown keys
  fail the load.
* ``stop`` []: stop strings added to every request's own; ``skip_special_tokens`` [true].

Requests: ``max_tokens`` / ``max_completion_tokens`` (tokenizer tokens), ``temperature`` (0 =
greedy), ``top_p``, ``stop``, ``seed``; see ``ocrd.worker.transformers_generate`` for the prompt,
stopping and usage rules. ``GET /v1/ocrd/info`` shows what was loaded (layer classes, parameter
dtypes, weight bytes, unquantized modules) — the evidence that quantization took place — and
the last generations' token counts with whether their client went away.

Load progress stages: "starting", "checking the cache", "importing transformers", "checking the
model", "loading processor", "loading weights" (message "shards loaded n/N, tensors k/M"),
"warm-up" (one two-token generation on a small image); the runner then prints ``ready`` with the
memory this model holds (CUDA: the allocator's peak reservation on its device; CPU: the RSS).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from PIL import Image

from ocrd.errors import ModelLoadFailed
from ocrd.worker.engines import ChatInput, Engine, Generation, GenerationParams, ProgressFn
from ocrd.worker.transformers_options import (
    SUPPORTED_APIS,
    Snapshot,
    TransformersOptions,
    find_snapshot,
    parse_options,
)

log = logging.getLogger("ocrd.worker.transformers")

_WEIGHTS_START, _WEIGHTS_SPAN = 0.25, 0.65  # overall progress fraction the weights take


class TransformersEngine(Engine):
    def __init__(self, model_id: str, options: TransformersOptions):
        super().__init__(model_id)
        self.options = options
        self.runtime: Any = None  # transformers_generate.Runtime once loaded
        self.details: dict[str, Any] = {}

    # --- loading ---------------------------------------------------------------------------------

    def load(self, progress: ProgressFn) -> None:
        options = self.options
        progress("starting", 0.0, f"transformers runner for {options.repo_id}@{options.revision}")
        snapshot = self._snapshot(progress)
        progress("importing transformers", 0.05, "torch and transformers")
        from ocrd.worker import transformers_load as load

        check_runner_support(options)

        place = load.placement(options)
        load.check_quantization_packages(options.quantization)
        hub = self._hub_kwargs(snapshot)
        progress("checking the model", 0.1, f"config.json, {options.loader}, quantization {options.quantization}")
        auto, plan = self._check_model(load, hub)
        progress("loading processor", 0.15, "tokenizer, image processor, chat template")
        processor, image_only = self._processor(snapshot, hub)
        model = self._weights(load, auto, place, snapshot, hub, plan, progress)
        self.runtime = self._runtime(model, processor, place)
        progress("warm-up", 0.92, "one short generation on a small image")
        self._warm_up()
        self.details = self._describe(load, model, place, processor, image_only, snapshot)
        self.details["unquantized_modules"] = list(plan.skip_modules) if plan else []

    def _snapshot(self, progress: ProgressFn) -> Snapshot:
        options = self.options
        progress("checking the cache", 0.02, options.cache_dir)
        snapshot = find_snapshot(options.cache_dir, options.repo_id, options.revision)
        if snapshot.complete:
            # huggingface_hub reads this once, at import: set it before transformers is imported.
            os.environ["HF_HUB_OFFLINE"] = "1"
        elif options.offline:
            from ocrd.worker.transformers_load import not_in_cache_message

            raise ModelLoadFailed(not_in_cache_message(self.model_id, options, snapshot))
        else:
            log.warning("%s is not complete in the cache: transformers may download it", options.repo_id)
        return snapshot

    def _hub_kwargs(self, snapshot: Snapshot) -> dict[str, Any]:
        revision = snapshot.commit if snapshot.complete and snapshot.commit else self.options.revision
        return {"revision": revision, "cache_dir": self.options.cache_dir, "local_files_only": snapshot.complete}

    def _check_model(self, load: Any, hub: dict[str, Any]) -> tuple[Any, Any]:
        """The auto class to load with and the quantization plan, or one clear error."""
        from transformers import AutoConfig

        config = _guard("reading config.json", lambda: AutoConfig.from_pretrained(
            self.options.repo_id, trust_remote_code=self.options.trust_remote_code, **hub))
        auto = load.model_class(config, self.options)
        plan = _guard("checking the layers to quantize", lambda: load.plan_quantization(auto, config, self.options))
        return auto, plan

    def _processor(self, snapshot: Snapshot, hub: dict[str, Any]) -> tuple[Any, bool]:
        from ocrd.worker.transformers_processor import load_processor

        kwargs = {**hub, **self.options.processor_options,
                  "trust_remote_code": self.options.trust_remote_code}
        return _guard("loading the processor", lambda: load_processor(self.options.repo_id, snapshot.path, kwargs))

    def _weights(self, load: Any, auto: Any, place: Any, snapshot: Snapshot, hub: dict[str, Any],
                 plan: Any, progress: ProgressFn) -> Any:
        from ocrd.worker.transformers_progress import ShardTracker, shard_map, track_weight_loading

        key_to_shard, shards = shard_map(snapshot.path)

        def report(done: int, total: int, tensors: int, tensor_total: int) -> None:
            fraction = tensors / tensor_total if tensor_total else (done / total if total else 0.0)
            progress("loading weights", _WEIGHTS_START + _WEIGHTS_SPAN * fraction,
                     f"shards loaded {done}/{total}, tensors {tensors}/{tensor_total}")

        quant = "" if self.options.quantization == "none" else f", quantizing to {self.options.quantization}"
        progress("loading weights", _WEIGHTS_START,
                 f"shards loaded 0/{len(shards) or '?'} to {place.device} as {place.dtype_name}{quant}")
        tracker = ShardTracker(key_to_shard, shards, report)
        with track_weight_loading(tracker):
            return _guard("loading the weights", lambda: load.load_weights(auto, self.options, place, hub, plan),
                          damaged_hint=f"if the files are damaged, download them again: ocrctl pull {self.model_id}")

    def _runtime(self, model: Any, processor: Any, place: Any) -> Any:
        import torch

        from ocrd.worker.transformers_generate import Runtime

        options = self.options
        extras = dict(options.generation_extras)
        # Checked on a copy: the defaults go into each generate() call, the model's config stays as shipped.
        unknown = copy.deepcopy(model.generation_config).update(**extras) if extras else {}
        if unknown:
            raise ModelLoadFailed(f"unknown generation option(s) for {options.repo_id}: {', '.join(sorted(unknown))}")
        return Runtime(
            model=model, processor=processor, device=place.device, dtype=getattr(torch, place.dtype_name),
            max_new_tokens=options.max_new_tokens, temperature=options.generation.get("temperature"),
            top_p=options.generation.get("top_p"), extras=extras, stop=options.stop,
            skip_special_tokens=options.skip_special_tokens, processor_kwargs=options.processor_kwargs,
            api=options.api,
        )

    def _warm_up(self) -> None:
        image = Image.new("RGB", (64, 64), "white")
        text_only = self.runtime.prompt_mode == "text"
        content = [{"type": "text", "text": "Hi"}] + ([] if text_only else [{"type": "image_url"}])
        chat = ChatInput(messages=[{"role": "user", "content": content}], images=[] if text_only else [image],
                         prompt="Hi", all_text=["Hi"])
        generation = self.generate(chat, GenerationParams(max_tokens=2, temperature=0))
        _guard("the warm-up generation", lambda: "".join(generation))

    def _describe(self, load: Any, model: Any, place: Any, processor: Any, image_only: bool,
                  snapshot: Snapshot) -> dict[str, Any]:
        return {
            "engine": "transformers", "repo_id": self.options.repo_id, "revision": snapshot.commit,
            "loader": self.options.loader, "device": place.device, "dtype": place.dtype_name,
            "quantization": self.options.quantization, "processor": type(processor).__name__,
            "image_only_processor": image_only, "prompt_mode": self.runtime.prompt_mode,
            **load.model_summary(model),
        }

    # --- serving ---------------------------------------------------------------------------------

    def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
        from ocrd.worker.transformers_generate import TransformersGeneration

        return TransformersGeneration(self.runtime, chat, params)

    def info(self) -> dict[str, Any]:
        runtime = self.runtime
        recent = list(runtime.recent) if runtime is not None else []
        ended = runtime.generations if runtime is not None else 0
        return {**self.details, "recent_generations": recent, "generations": ended}

    def memory_bytes(self) -> int | None:
        from ocrd.worker.transformers_load import cuda_memory_bytes

        return cuda_memory_bytes(self.details.get("device", "cpu"))


def check_runner_support(options: TransformersOptions) -> None:
    """Refuses, before any weights load, a model this runner cannot drive: one with its own Python
    API, or whose code needs another transformers than the one installed."""
    if options.api not in SUPPORTED_APIS:
        raise ModelLoadFailed(
            f"{options.repo_id} is driven through its own Python API ({options.api}), which this "
            f"runner does not support yet; serve it on the vllm engine if the catalog lists it"
        )
    if options.transformers_version:
        import transformers
        from packaging.specifiers import SpecifierSet

        if transformers.__version__ not in SpecifierSet(options.transformers_version):
            # Standard library only, and only on this error: the runner still imports nothing
            # of ocrd but its errors on the way to a model.
            from ocrd.install_hint import install_command

            wanted = f"transformers{options.transformers_version}"
            raise ModelLoadFailed(
                f"{options.repo_id} needs {wanted} but this runner has {transformers.__version__}; "
                f"make a venv with it (python3 -m venv VENV && "
                f"{install_command('transformers', 'VENV/bin/python')} '{wanted}') and set "
                f"transformers.python = \"VENV/bin/python\""
            )


def _guard(what: str, step: Any, damaged_hint: str = "") -> Any:
    """Runs ``step``; any failure becomes one ModelLoadFailed line (the traceback goes to the log)."""
    try:
        return step()
    except ModelLoadFailed:
        raise
    except Exception as exc:
        log.error("%s failed", what, exc_info=exc)
        reason = " ".join(str(exc).split()) or "no details"
        hint = f"; {damaged_hint}" if damaged_hint else ""
        raise ModelLoadFailed(f"{what} failed: {type(exc).__name__}: {reason[:400]}{hint}") from None


def create_engine(model_id: str, options: dict[str, Any]) -> TransformersEngine:
    """The transformers engine for ``options`` (see the module docstring); usage errors raise."""
    return TransformersEngine(model_id, parse_options(options))
