"""The interface between the runner's generic OpenAI server and the engine that runs a model.

A runner process serves exactly one model with one engine. The server (``ocrd.worker.server``)
knows nothing about OCR or transformers: it parses the OpenAI request into a ``ChatInput`` and
``GenerationParams``, asks the engine for a ``Generation`` and turns the text pieces into a
response or a stream. Engines own everything model-specific, including what a "token" is
(words for the builtin OCR engine, tokenizer tokens for transformers), so they apply
``max_tokens`` and ``stop`` themselves and report usage.

Engines are registered by name in ``ENGINES``; each factory imports its engine module lazily so
that a builtin runner never imports torch and a transformers runner never imports onnxruntime.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# stage, progress in [0, 1] (negative when unknown), detail
ProgressFn = Callable[[str, float, str], None]


class EngineOptionsError(ValueError):
    """The engine name or its ``--options`` are wrong: a usage error (runner exits with 2)."""


@dataclass
class ChatInput:
    """What a request gives the model, images already decoded."""

    messages: list[dict[str, Any]]  # the OpenAI messages as sent (for chat templates)
    images: list[Image.Image]  # the images of the last user message, in order, RGB
    prompt: str  # the text parts of the last user message, joined with newlines
    all_text: list[str] = field(default_factory=list)  # every text part of every message


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int | None = None  # in the engine's own tokens
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    # From the request's ``ocrd`` field (a preset the daemon applied): arguments for the model's
    # processor (GOT-OCR2 ``format``) and whether special tokens stay in the text (MinerU).
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    skip_special_tokens: bool | None = None


class Generation(abc.ABC):
    """One completion: iterate it (or ``run`` it) for text pieces; afterwards the result fields
    are set.

    Both are blocking (the server runs them in a worker thread). The concatenated pieces are the
    whole completion, whether the client streams or not.
    """

    finish_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]: ...

    def run(self, emit: Callable[[str], None]) -> None:
        """The whole generation in the calling thread, each piece handed to ``emit`` as it comes
        (the same pieces iteration yields). The server calls this, not ``__iter__``: an engine that
        produces its pieces in a thread of its own (transformers' ``generate``) would otherwise
        cost a hand-over between threads per piece, and a thread per request."""
        for piece in self:
            emit(piece)

    def cancel(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op by default
        """The client went away: stop working soon. Called from the event loop's thread while
        another thread may be iterating; engines whose pieces come quickly need not care."""


class Engine(abc.ABC):
    """A loaded model. ``load`` runs once before the server accepts connections."""

    def __init__(self, model_id: str):
        self.model_id = model_id

    @abc.abstractmethod
    def load(self, progress: ProgressFn) -> None:
        """Loads and warms up the model; raises ``ocrd.errors.ModelLoadFailed`` with a one-line
        reason the user can act on."""

    @abc.abstractmethod
    def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
        """A generation for one request; raises ``ocrd.errors.InvalidRequest`` for input the
        engine cannot take. Cheap: the work happens while iterating."""

    def info(self) -> dict[str, Any]:
        """What was loaded and how (for ``GET /v1/ocrd/info``: debugging and tests)."""
        return {}

    def memory_bytes(self) -> int | None:
        """Memory this model holds where the process's RSS would not tell (GPU memory); None: the RSS."""
        return None


# engine name -> "module:factory"; factory(model_id, options) -> Engine
ENGINES: dict[str, str] = {
    "builtin": "ocrd.worker.builtin_worker:create_engine",
    "transformers": "ocrd.worker.transformers_worker:create_engine",
}


def create_engine(name: str, model_id: str, options: dict[str, Any]) -> Engine:
    """The engine ``name`` for ``model_id``, configured by ``options`` (not loaded yet)."""
    target = ENGINES.get(name)
    if target is None:
        known = ", ".join(sorted(ENGINES))
        raise EngineOptionsError(f"unknown engine {name!r}; this runner knows: {known}")
    module_name, factory_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(model_id, options)
