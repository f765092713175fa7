"""One chat completion with a transformers model: prompt, generation, streaming, stopping.

Prompt. OpenAI messages become the processor's chat format (every content a list of parts; the
images of the last user message, already decoded, take the places of their ``image_url`` parts;
image parts of earlier messages are dropped because runners only decode the last user message's
images; ``developer`` counts as ``system``); the processor's chat template renders them to text,
and one processor call tokenizes that text with the images. A processor without a chat template
(GOT-OCR2 as published) builds its own prompt from the images alone: it is called as
``processor(images=..., **processor_kwargs)``, with ``multi_page=True`` for several images, and
the request's text is not part of the prompt.
A tokenizer-only model gets the text of the conversation and refuses images.

Generation runs in the thread that calls ``run`` (the server's worker thread): ``generate``'s
streamer (``PieceStreamer``) decodes each new token, cuts the text at stop strings and hands the
pieces to the caller's ``emit`` there and then, so streamed and non-streamed responses are the
same pieces. No thread of its own and no queue between generate and the text: with
transformers' TextIteratorStreamer, a thread per request and another thread woken for every
token (to decode and scan what the streamer queued) cost the runner about 0.15 ms of CPU per
token, a tenth of a token of the tiny model of bench/transformers_overhead.py; now it is about
0.02 ms. ``__iter__`` (the ``Generation`` interface, the warm-up) runs ``run`` in a thread and
hands the pieces over a queue. A lock per model makes generations strictly sequential even when
a cancelled one is still winding down.

Stopping (``ocrd.worker.transformers_stopping``): generation stops on the token that completes a
stop string in the *generated* text (transformers' own ``stop_strings`` also match across the
prompt, so a stop like "\n\n" would end a completion whose prompt ends in "\n" at once); the text
is cut before the first stop string. ``cancel()`` (the client went away) stops generation at the
next token. ``finish_reason`` is "stop" after EOS or a stop string, "length" when the token limit
ended it. Usage: prompt tokens = the prompt's ``input_ids`` length (image placeholder tokens
included), completion tokens = tokens generated, EOS included (as OpenAI and vLLM count).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ocrd.errors import InvalidRequest
from ocrd.worker.engines import ChatInput, Generation, GenerationParams
from ocrd.worker.transformers_stopping import StopScanner, stopping_criteria

log = logging.getLogger("ocrd.worker.transformers")


@dataclass
class Runtime:
    """A loaded model and everything a generation needs from the runner's options."""

    model: Any
    processor: Any
    device: str
    dtype: Any  # torch dtype of floating inputs (pixel values)
    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # further generate() defaults
    stop: tuple[str, ...] = ()
    skip_special_tokens: bool = True
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    api: str = "chat"  # the catalog's: "got_ocr2" builds its own prompt whatever the template says
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The last generations' token counts and whether their client went away, and how many have
    # ended in all: /v1/ocrd/info shows them, so tests can see that a cancelled generation really
    # stopped (a generation ends after its client's request did: the count says when it has).
    recent: deque = field(default_factory=lambda: deque(maxlen=8))
    generations: int = 0

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def prompt_mode(self) -> str:
        """"chat" (a chat template), "processor" (it builds the prompt: GOT-OCR2) or "text"."""
        if not hasattr(self.processor, "image_processor"):
            return "text"
        if self.api == "got_ocr2":
            # GOT-OCR2's processor takes the task as arguments (format, box, color), not as text;
            # through a chat template those arguments would be silently ignored.
            return "processor"
        return "chat" if getattr(self.processor, "chat_template", None) else "processor"


# --- the prompt ----------------------------------------------------------------------------------


def to_conversation(messages: list[dict[str, Any]], images: list[Image.Image]) -> list[dict[str, Any]]:
    """OpenAI messages in the processor's chat format (see the module docstring)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    pending = iter(images)
    conversation = []
    for index, message in enumerate(messages):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        converted = []
        for part in parts:
            if part.get("type") == "text":
                converted.append({"type": "text", "text": part.get("text") or ""})
            elif part.get("type") == "image_url" and index == last_user:
                image = next(pending, None)
                if image is not None:
                    converted.append({"type": "image", "image": image})
        role = "system" if message.get("role") == "developer" else message.get("role")
        conversation.append({"role": role, "content": converted})
    return conversation


def prepare_inputs(runtime: Runtime, chat: ChatInput, request_kwargs: dict[str, Any] | None = None) -> Any:
    """Token ids (and pixel values) on the model's device; InvalidRequest for input it cannot take.

    ``request_kwargs`` (a preset's processor arguments) add to the runner's own for this request.
    """
    if request_kwargs:
        runtime = dataclasses.replace(runtime, processor_kwargs={**runtime.processor_kwargs, **request_kwargs})
    try:
        inputs = _encode(runtime, chat)
    except InvalidRequest:
        raise
    except (ValueError, TypeError, IndexError) as exc:  # what processors raise on input they reject
        raise InvalidRequest(f"the model's processor rejected the request: {' '.join(str(exc).split())}") from None
    from transformers import BatchFeature

    if isinstance(inputs, BatchFeature):  # casts only floating tensors (pixel values), not token ids
        return inputs.to(runtime.device, dtype=runtime.dtype)
    return inputs.to(runtime.device)


def _encode(runtime: Runtime, chat: ChatInput) -> Any:
    mode = runtime.prompt_mode
    if mode == "processor":
        if not chat.images:
            raise InvalidRequest("this model reads images only: send at least one image_url part", param="messages")
        kwargs = dict(runtime.processor_kwargs)
        if len(chat.images) > 1:
            kwargs.setdefault("multi_page", True)
        images = chat.images if len(chat.images) > 1 else chat.images[0]
        return runtime.processor(images=images, return_tensors="pt", **kwargs)
    if mode == "text":
        if chat.images:
            raise InvalidRequest("this model takes no images", param="messages")
        conversation = [{"role": m["role"], "content": m["content"]} for m in _text_only(chat.messages)]
        return runtime.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    # Rendered to text, then one processor call with the images as a flat list: what
    # apply_chat_template(tokenize=True) does, except that it nests the images per conversation,
    # which GOT-OCR2's processor refuses (it reads nested lists as multi-page documents).
    processor = runtime.processor
    prompt = processor.apply_chat_template(
        to_conversation(chat.messages, chat.images), add_generation_prompt=True, tokenize=False
    )
    kwargs = dict(runtime.processor_kwargs)
    bos = getattr(runtime.tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):  # the template wrote BOS: the tokenizer must not add another
        kwargs["add_special_tokens"] = False
    return processor(images=list(chat.images) or None, text=[prompt], return_tensors="pt", **kwargs)


def _text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            content = "\n".join(p.get("text") or "" for p in content or [] if p.get("type") == "text")
        out.append({"role": message.get("role"), "content": content})
    return out


def sampling(runtime: Runtime, params: GenerationParams) -> dict[str, Any]:
    """generate() sampling kwargs: the request's, else the runner's, else the model's own config.

    temperature 0 means greedy decoding, as in OpenAI's API."""
    temperature = params.temperature if params.temperature is not None else runtime.temperature
    top_p = params.top_p if params.top_p is not None else runtime.top_p
    if temperature is None:
        return {} if top_p is None else {"top_p": top_p}
    if temperature <= 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, **({} if top_p is None else {"top_p": top_p})}


# --- the generation ------------------------------------------------------------------------------


class TransformersGeneration(Generation):
    """One completion; ``run`` calls ``generate`` and hands the text pieces to ``emit``."""

    def __init__(self, runtime: Runtime, chat: ChatInput, params: GenerationParams):
        self.runtime = runtime
        self.chat = chat
        self.params = params
        self.max_new_tokens = params.max_tokens or runtime.max_new_tokens
        self.stops = tuple(dict.fromkeys(runtime.stop + params.stop))  # runner's, then the request's
        self._cancelled = threading.Event()  # generate() stops at the next token once set
        self._client_gone = False
        self._generated: Any = None  # the new token ids, once generate returned
        self._stop_matched = False  # a stop string ended generate()

    def cancel(self) -> None:
        self._client_gone = True
        self._cancelled.set()

    def run(self, emit: Callable[[str], None]) -> None:
        inputs = prepare_inputs(self.runtime, self.chat, self.params.processor_kwargs)
        self.prompt_tokens = int(inputs["input_ids"].shape[-1])
        scanner = StopScanner(self.stops)
        skip = self.params.skip_special_tokens
        streamer = PieceStreamer(
            self.runtime.tokenizer, scanner, emit, self._cancelled.set,
            skip_special_tokens=self.runtime.skip_special_tokens if skip is None else skip,
        )
        self._generate(inputs, streamer)
        streamer.end()  # generate() ends its streamer itself; this covers a generation never begun
        self._account(scanner.stopped)

    def __iter__(self) -> Iterator[str]:
        pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        worker = threading.Thread(target=self._run_into, args=(pieces,), name="generate", daemon=True)
        worker.start()
        finished = False
        try:
            while (piece := pieces.get()) is not _END:
                if isinstance(piece, _Failed):
                    raise piece.error
                yield piece
            finished = True
        finally:
            if not finished:  # the consumer went away mid-stream: free the model for the next request
                self.cancel()
        worker.join()

    def _run_into(self, pieces: queue.SimpleQueue[Any]) -> None:
        try:
            self.run(pieces.put)
        except BaseException as exc:  # handed to the iterating thread
            pieces.put(_Failed(exc))
        pieces.put(_END)

    def _generate(self, inputs: Any, streamer: Any) -> None:
        import torch

        kwargs: dict[str, Any] = {**self.runtime.extras, "max_new_tokens": self.max_new_tokens,
                                  **sampling(self.runtime, self.params)}
        if "min_new_tokens" in kwargs:  # above the request's limit it only earns a warning per call
            kwargs["min_new_tokens"] = min(kwargs["min_new_tokens"], self.max_new_tokens)
        criteria = stopping_criteria(self._cancelled, self.runtime.tokenizer, self.stops,
                                     int(inputs["input_ids"].shape[-1]))
        try:
            with self.runtime.lock:  # strictly one generate() at a time, cancelled ones included
                if self._cancelled.is_set():
                    return  # the client went away before its turn came: nothing to generate
                if self.params.seed is not None:
                    torch.manual_seed(self.params.seed)
                with torch.inference_mode():
                    output = self.runtime.model.generate(**inputs, **kwargs, streamer=streamer,
                                                         stopping_criteria=criteria)
            self._generated = _new_tokens(output, inputs["input_ids"])
            self._stop_matched = any(getattr(c, "matched", False) for c in criteria)
        finally:
            tokens = 0 if self._generated is None else int(self._generated.shape[-1])
            self.runtime.recent.append({"completion_tokens": tokens, "cancelled": self._client_gone})
            self.runtime.generations += 1

    def _account(self, stopped_in_text: bool) -> None:
        generated = self._generated
        count = 0 if generated is None else int(generated.shape[-1])
        self.completion_tokens = count
        if stopped_in_text or self._stop_matched or count == 0 or self._ends_with_eos(generated):
            self.finish_reason = "stop"
        else:
            self.finish_reason = "length" if count >= self.max_new_tokens else "stop"

    def _ends_with_eos(self, generated: Any) -> bool:
        eos = self.runtime.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        return int(generated[-1]) in eos_ids


_END = object()  # the last item __iter__'s queue carries
_WINDOW = 16  # tokens a PieceStreamer decodes at most, besides the one kept as context


@dataclass(frozen=True)
class _Failed:
    """What ``run`` raised, handed from the generating thread to the iterating one."""

    error: BaseException


class PieceStreamer:
    """A streamer for ``generate`` that turns each new token into text in the generating thread.

    Decoding is incremental: the tokens since the window's start are decoded, and what that text
    adds to the text already emitted from the same window is the new piece; a text that ends in an
    incomplete character (U+FFFD) waits for the next token. Every ``_WINDOW`` tokens the window
    moves up to the last token, which stays as context for the next one (a SentencePiece word's
    leading space, a character split over byte tokens), as transformers' TextStreamer keeps one
    at a newline. So the work per token is one decode of at most ``_WINDOW`` + 1 tokens, where
    TextStreamer decodes every token since the last newline (quadratic in the length of a line)
    and then runs its text heuristics. The pieces join up to what ``tokenizer.decode`` makes of
    all the generated tokens.

    The text is cut before the first stop string by ``scanner``, and each non-empty piece goes to
    ``emit``. Once the scanner sees a stop string, ``stop_generation`` is called: the stopping
    criteria may not have seen it (their decoding of a window of tokens can differ), and the
    text is the authority.
    """

    def __init__(self, tokenizer: Any, scanner: StopScanner, emit: Callable[[str], None],
                 stop_generation: Callable[[], None], skip_special_tokens: bool):
        self.scanner, self.emit, self.stop_generation = scanner, emit, stop_generation
        self._decode = functools.partial(tokenizer.decode, skip_special_tokens=skip_special_tokens)
        self._tokens: list[int] = []  # the generated tokens
        self._window = 0  # decoding starts at this token
        self._emitted = 0  # characters of the window's text already emitted
        self._prompt = True  # generate() puts the prompt first: it is not part of the text
        self.ended = False

    def put(self, value: Any) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError("the runner streams one sequence at a time")
        if self._prompt:
            self._prompt = False
            return
        if self.scanner.stopped:  # the text is complete: decoding more tokens is wasted
            return
        tokens = self._tokens
        tokens += value.reshape(-1).tolist()
        text = self._decode(tokens[self._window:])
        if len(text) <= self._emitted or text.endswith("\ufffd"):
            return  # no text yet (a skipped special token, half a character)
        piece = text[self._emitted:]
        if len(tokens) - self._window > _WINDOW:  # all is emitted: the next window starts here
            self._window = len(tokens) - 1
            self._emitted = len(self._decode(tokens[self._window:]))
        else:
            self._emitted = len(text)
        self._text(piece)

    def end(self) -> None:
        """What is left: tokens that added no text yet (an incomplete character at the very end)."""
        if self.ended:
            return
        self.ended = True
        rest = ""
        if self._tokens and not self.scanner.stopped:
            rest = self._decode(self._tokens[self._window:])[self._emitted:]
        self._text(rest, last=True)

    def _text(self, text: str, last: bool = False) -> None:
        scanner = self.scanner
        if scanner.stopped:
            return
        piece = scanner.feed(text)
        if scanner.stopped:
            self.stop_generation()
        elif last:
            piece += scanner.flush()
        if piece:
            self.emit(piece)


def _new_tokens(output: Any, input_ids: Any) -> Any:
    """The generated token ids: decoder-only models return the prompt in front of them."""
    sequences = getattr(output, "sequences", output)[0]
    prompt_length = int(input_ids.shape[-1])
    if sequences.shape[-1] >= prompt_length and bool((sequences[:prompt_length] == input_ids[0]).all()):
        return sequences[prompt_length:]
    return sequences
