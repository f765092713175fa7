"""Stopping a transformers generation: stop strings, in the text and in ``generate``, and cancel.

Two sides, because each alone is wrong somewhere:

* ``StopStrings`` (a StoppingCriteria) ends ``generate`` on the token that completes a stop
  string, so no tokens are wasted and ``completion_tokens`` counts up to that token. It looks only
  at the generated tokens (transformers' ``stop_strings`` look at the whole sequence, prompt
  included), at a tail window of them decoded with and without special tokens, so a stop string
  that is a special token (``<|im_end|>``) stops generation although the text never shows it.
* ``StopScanner`` cuts the streamed *text* before the first stop string. It is the authority on
  the output: if it sees a stop string the criteria missed (decoding differences), the
  generation is cancelled from there.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_WINDOW_MARGIN = 8  # tokens decoded beyond the longest stop string's length in characters


class StopScanner:
    """Cuts streamed text before the first stop string, holding back what may start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """The text that is safe to emit now."""
        if self.stopped:
            return ""
        text = self._held + piece
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped, self._held = True, ""
            return text[: min(cuts)]
        keep = self._partial_stop_length(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The held-back text, once no more pieces come."""
        held, self._held = self._held, ""
        return held

    def _partial_stop_length(self, text: str) -> int:
        """The longest suffix of ``text`` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def stopping_criteria(cancelled: threading.Event, tokenizer: Any, stops: tuple[str, ...], prompt_length: int) -> Any:
    """The StoppingCriteriaList for one generation: cancel, then stop strings if any."""
    from transformers import StoppingCriteriaList

    cancel, stop_strings = _criteria_classes()
    criteria = [cancel(cancelled)] + ([stop_strings(tokenizer, stops, prompt_length)] if stops else [])
    return StoppingCriteriaList(criteria)


@functools.cache
def _criteria_classes() -> tuple[type, type]:
    """The criteria classes, made once: they subclass transformers', which loads lazily."""
    import torch
    from transformers import StoppingCriteria

    class Cancel(StoppingCriteria):
        """Stops every sequence once ``cancelled`` is set (the client went away).

        Asked once per token: it hands back the same two answer tensors instead of making one
        per step (generate() only reads them)."""

        def __init__(self, cancelled: threading.Event) -> None:
            self.cancelled = cancelled
            self.answers: dict[tuple[int, Any], list[Any]] = {}  # (batch, device) -> [no, yes]

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            key = (input_ids.shape[0], input_ids.device)
            answers = self.answers.get(key)
            if answers is None:
                answers = self.answers[key] = [
                    torch.full((key[0],), value, dtype=torch.bool, device=key[1]) for value in (False, True)]
            return answers[self.cancelled.is_set()]

    class StopStrings(StoppingCriteria):
        """Stops once the generated tokens' text contains a stop string; remembers that it did."""

        def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_length: int) -> None:
            self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length
            self.matched = False
            self.window = max(len(s) for s in stops) + _WINDOW_MARGIN

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            tail = input_ids[0, max(self.prompt_length, input_ids.shape[-1] - self.window):].tolist()
            texts = {self.tokenizer.decode(tail, skip_special_tokens=skip) for skip in (False, True)}
            self.matched = self.matched or any(s in text for s in self.stops for text in texts)
            return _all(input_ids, self.matched)

    return Cancel, StopStrings


def _all(input_ids: Any, value: bool) -> Any:
    import torch

    return torch.full((input_ids.shape[0],), value, dtype=torch.bool, device=input_ids.device)
