"""Prompt presets: a model's named tasks (dots.ocr ``layout``, GOT-OCR2 ``format``, ...).

A preset is what an OCR model was trained to be asked: the exact prompt, the sampling its authors
use and how its output looks. A request picks one with ``"ocrd": {"preset": "layout"}`` or the model
suffix ``dots.ocr:layout``; a request to an OCR model with an image and no text gets the model's
``default_preset``. Presets are data (``[model.presets.NAME]`` in ``models.toml``); this module
parses, checks and renders them.

How the user's own text combines with a preset (``render_preset``):

* A prompt containing ``{text}`` takes the user's text there (e.g. dots.ocr ``grounding`` wants a
  bounding box ``[x1, y1, x2, y2]``); without text that preset is an InvalidRequest naming what it
  wants (``text_hint``).
* Any other prompt is used verbatim: these models were fine-tuned on those exact strings and
  drift when the wording changes, so the user's text is not appended. ``RenderedPreset.
  user_text_ignored`` says when that happened, so the HTTP layer can warn.
* An empty prompt means the model takes no text at all (GOT-OCR2: ``processor(image)``; moondream2
  ``caption``): its task is chosen by ``processor_kwargs`` instead.
* Some engines need a fixed wrapping around every prompt of a model (dots.ocr on vLLM wants
  ``<|img|><|imgpad|><|endofimg|>`` in front, or vLLM v1 inserts a newline; Phi-3-vision through
  transformers wants ``<|image_1|>\\n``). That is a fact of the model *and the engine*, not of the
  preset, so it lives in ``engine_options[engine]["prompt_prefix" | "prompt_suffix"]`` and is
  applied when ``render_preset`` is given the engine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocrd.catalog.documents import OUTPUT_FORMATS
from ocrd.errors import InvalidRequest

TEXT_PLACEHOLDER = "{text}"
PRESET_NAME = re.compile(r"^[a-z][a-z0-9_-]*\Z")  # \Z: $ also matches before a final newline

# Sampling keys a preset may set, with the closed range each must lie in (None: unbounded). The
# names are the OpenAI / vLLM request fields; ``no_repeat_ngram_size`` is transformers' (MinerU2.5
# relies on it). A typo in models.toml is an error, not a silently ignored knob.
SAMPLING_RANGES: dict[str, tuple[float | None, float | None, type]] = {
    "temperature": (0.0, 2.0, float),
    "top_p": (0.0, 1.0, float),
    "top_k": (-1, None, int),
    "min_p": (0.0, 1.0, float),
    "max_tokens": (1, None, int),
    "presence_penalty": (-2.0, 2.0, float),
    "frequency_penalty": (-2.0, 2.0, float),
    "repetition_penalty": (0.0, 2.0, float),
    "no_repeat_ngram_size": (0, None, int),
}


@dataclass(frozen=True)
class Preset:
    """One named task of a model. Sampling, stop and skip_special_tokens already include the
    model's defaults (``[model] sampling``/``stop``/...), so a Preset is complete on its own."""

    name: str
    # The text sent with the image; "{text}" marks where the user's text goes; "" = no text prompt.
    prompt: str
    # What comes back, in a few words ("one JSON list of {bbox, category, text}", "DocTags", ...).
    output: str
    description: str = ""
    sampling: Mapping[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    # None: the engine's default (True in both transformers and vLLM). False where the output's
    # structure is carried by special tokens (DocTags, MinerU's <|box_start|>, DeepSeek's <|ref|>).
    skip_special_tokens: bool | None = None
    # Keyword arguments for the model's own processor / API call (GOT-OCR2: processor(image,
    # format=True); moondream2: the method to call; DeepSeek-OCR: model.infer's sizes).
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # A system message the authors send with this task (MinerU2.5, Nanonets); None: none.
    system: str | None = None
    # What the user's text must be, for presets whose prompt has "{text}".
    text_hint: str = ""
    # The answer's format for documents (one of ocrd.catalog.documents.OUTPUT_FORMATS).
    format: str = "text"

    @property
    def takes_text(self) -> bool:
        return TEXT_PLACEHOLDER in self.prompt


@dataclass(frozen=True)
class RenderedPreset:
    """A preset made concrete for one request: what the runner (or the vLLM proxy) sends."""

    prompt: str
    sampling: dict[str, Any]
    stop: tuple[str, ...]
    skip_special_tokens: bool | None
    processor_kwargs: dict[str, Any]
    system: str | None = None
    user_text_ignored: bool = False


# --- parsing --------------------------------------------------------------------------------


def parse_presets(model_id: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Preset]:
    """``[model.presets.*]`` tables -> Presets, each merged over the model-level ``defaults``
    (``sampling``, ``stop``, ``skip_special_tokens``, ``system``). ValueError names the culprit."""
    presets = {}
    for name, table in raw.items():
        where = f"catalog entry {model_id}, preset {name!r}"
        if not PRESET_NAME.match(name):
            raise ValueError(f"{where}: preset names are lower-case words ([a-z0-9_-])")
        presets[name] = _parse_preset(where, name, dict(table), defaults)
    return presets


def _parse_preset(where: str, name: str, table: dict[str, Any], defaults: Mapping[str, Any]) -> Preset:
    prompt = table.pop("prompt", None)
    output = table.pop("output", None)
    if not isinstance(prompt, str) or not isinstance(output, str) or not output.strip():
        raise ValueError(f"{where}: needs a string 'prompt' (may be empty) and a non-empty 'output'")
    sampling = {**defaults.get("sampling", {}), **table.pop("sampling", {})}
    check_sampling(where, sampling)
    preset = Preset(
        name=name,
        prompt=prompt,
        output=output,
        description=table.pop("description", ""),
        sampling=sampling,
        stop=tuple(table.pop("stop", defaults.get("stop", ()))),
        skip_special_tokens=table.pop("skip_special_tokens", defaults.get("skip_special_tokens")),
        processor_kwargs=dict(table.pop("processor_kwargs", {})),
        system=table.pop("system", defaults.get("system")),
        text_hint=table.pop("text_hint", ""),
        format=table.pop("format", "text"),
    )
    if table:
        raise ValueError(f"{where}: unknown keys {sorted(table)}")
    if preset.takes_text and not preset.text_hint:
        raise ValueError(f"{where}: a prompt with {TEXT_PLACEHOLDER} needs a 'text_hint'")
    if preset.format not in OUTPUT_FORMATS:
        raise ValueError(f"{where}: format {preset.format!r} is not one of {list(OUTPUT_FORMATS)}")
    if preset.prompt.count(TEXT_PLACEHOLDER) > 1:
        raise ValueError(f"{where}: at most one {TEXT_PLACEHOLDER} per prompt")
    return preset


def check_sampling(where: str, sampling: Mapping[str, Any]) -> None:
    """ValueError unless every key is known and its value a finite number in range."""
    for key, value in sampling.items():
        if key not in SAMPLING_RANGES:
            raise ValueError(f"{where}: unknown sampling key {key!r}; known: {sorted(SAMPLING_RANGES)}")
        low, high, kind = SAMPLING_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: sampling.{key} must be a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise ValueError(f"{where}: sampling.{key} must be an integer, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{where}: sampling.{key}={value} is outside [{low}, {high}]")


# --- looking up and rendering ------------------------------------------------------------------


def find_preset(model_id: str, presets: Mapping[str, Preset], name: str, *, param: str = "model") -> Preset:
    """The preset ``name``, or InvalidRequest (400) listing the ones the model has."""
    preset = presets.get(name)
    if preset is None:
        offered = ", ".join(sorted(presets)) if presets else "none"
        raise InvalidRequest(
            f"model {model_id!r} has no preset {name!r}; its presets: {offered}", param=param
        )
    return preset


def render(
    preset: Preset,
    model_id: str,
    user_text: str | None,
    *,
    prefix: str = "",
    suffix: str = "",
) -> RenderedPreset:
    """The preset for one request: the user's text placed (or ignored, see the module doc), the
    engine's wrapping around a non-empty prompt, copies of the mutable parts."""
    text = user_text.strip() if user_text else ""
    prompt = preset.prompt
    if preset.takes_text:
        if not text:
            raise InvalidRequest(
                f"preset {preset.name!r} of {model_id!r} needs text in the message: {preset.text_hint}",
                param="messages",
            )
        prompt = prompt.replace(TEXT_PLACEHOLDER, text)
    if prompt:
        prompt = f"{prefix}{prompt}{suffix}"
    return RenderedPreset(
        prompt=prompt,
        sampling=dict(preset.sampling),
        stop=preset.stop,
        skip_special_tokens=preset.skip_special_tokens,
        processor_kwargs=dict(preset.processor_kwargs),
        system=preset.system,
        user_text_ignored=bool(text) and not preset.takes_text,
    )
