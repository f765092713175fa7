"""Stop strings and cancellation of the transformers runner, on a real (tiny, trained here) tokenizer."""

from __future__ import annotations

import os
import threading

import pytest

from ocrd.worker.engines import GenerationParams
from ocrd.worker.transformers_generate import Runtime, sampling
from ocrd.worker.transformers_stopping import StopScanner, stopping_criteria


def scan(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    scanner = StopScanner(stops)
    out = [scanner.feed(piece) for piece in pieces]
    if not scanner.stopped:
        out.append(scanner.flush())
    return [piece for piece in out if piece], scanner.stopped


def test_text_is_cut_before_the_first_stop_string_across_pieces():
    assert scan(["Hello wo", "rld, EN", "D here"], ("END",)) == (["Hello wo", "rld, "], True)
    assert scan(["a", "b", "STOP", "c"], ("ST", "bS")) == (["a"], True)  # earliest occurrence wins


def test_held_back_text_is_released_when_no_stop_follows():
    pieces, stopped = scan(["total: 1", "0 EU", "R and more"], ("EUROS",))
    assert "".join(pieces) == "total: 10 EUR and more" and not stopped
    assert pieces[1] == "0 "  # "EU" waited: it might have begun "EUROS"


def test_without_stops_pieces_pass_unchanged():
    assert scan(["x", "", "y"], ()) == (["x", "y"], False)


def _runtime(temperature=None, top_p=None) -> Runtime:
    return Runtime(model=None, processor=None, device="cpu", dtype=None, max_new_tokens=8,
                   temperature=temperature, top_p=top_p)


@pytest.mark.parametrize("request_t, runner_t, expected", [
    (0, 0.7, {"do_sample": False}),
    (None, 0.0, {"do_sample": False}),
    (0.5, None, {"do_sample": True, "temperature": 0.5}),
    (None, None, {}),  # the model's generation_config decides
])
def test_temperature_zero_is_greedy_and_the_request_wins(request_t, runner_t, expected):
    assert sampling(_runtime(temperature=runner_t), GenerationParams(temperature=request_t)) == expected


def test_top_p_goes_with_sampling():
    assert sampling(_runtime(top_p=0.9), GenerationParams(temperature=1.0)) == {
        "do_sample": True, "temperature": 1.0, "top_p": 0.9}


@pytest.fixture(scope="module")
def tokenizer():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tests.support.tiny_model_recipes import train_tokenizer

    return train_tokenizer(["<|endoftext|>", "<|im_end|>"], "", eos_token="<|im_end|>")


def _ids(tokenizer, text: str):
    import torch

    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def _stops_at(tokenizer, prompt: str, generated: str, stops: tuple[str, ...]) -> bool:
    import torch

    prompt_ids = _ids(tokenizer, prompt)
    criteria = stopping_criteria(threading.Event(), tokenizer, stops, prompt_ids.shape[-1])
    sequence = torch.cat([prompt_ids, _ids(tokenizer, generated)], dim=-1)
    return bool(criteria(sequence, None)[0])


def test_a_stop_string_in_the_generated_text_stops_generation(tokenizer):
    assert _stops_at(tokenizer, "Read the text.", " The quick brown", ("quick",))
    assert not _stops_at(tokenizer, "Read the text.", " The quick brown", ("lazy",))


def test_a_stop_string_spanning_the_prompt_does_not(tokenizer):
    # The prompt ends in "\n": transformers' stop_strings would stop on a generated "\n" for "\n\n".
    assert not _stops_at(tokenizer, "assistant\n", "\nThe", ("\n\n",))
    assert _stops_at(tokenizer, "assistant\n", "The\n\n", ("\n\n",))


def test_a_special_token_stop_string_stops_generation(tokenizer):
    assert _stops_at(tokenizer, "Read.", "The dog<|im_end|>", ("<|im_end|>",))


def test_cancel_stops_every_step_after_it(tokenizer):
    cancelled = threading.Event()
    criteria = stopping_criteria(cancelled, tokenizer, (), 1)
    ids = _ids(tokenizer, "The quick brown fox")
    assert not bool(criteria(ids, None)[0])
    cancelled.set()
    assert bool(criteria(ids, None)[0])


# --- the streamer: token ids to text pieces, in the generating thread ------------------------------


def _stream(tokenizer, ids: list[int], stops: tuple[str, ...] = (), skip: bool = True) -> tuple[list[str], int]:
    """The pieces a PieceStreamer emits for ``ids`` fed one by one after a prompt, as generate()
    feeds them, and how often it asked generation to stop."""
    import torch

    from ocrd.worker.transformers_generate import PieceStreamer

    pieces: list[str] = []
    stop_calls: list[None] = []
    streamer = PieceStreamer(tokenizer, StopScanner(stops), pieces.append, lambda: stop_calls.append(None),
                             skip_special_tokens=skip)
    streamer.put(torch.tensor([[5, 6, 7]]))  # the prompt: not part of the text
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return pieces, len(stop_calls)


def test_streamed_pieces_join_up_to_the_decoded_text(tokenizer):
    # Characters outside the tokenizer's corpus are several byte tokens each: a piece never ends
    # in half a character, and nothing is lost or doubled where they join.
    text = "Grüße aus 東京 — naïve café, 50 €.\nNext line"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # some characters really are split over tokens
    pieces, stop_calls = _stream(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(pieces) > 1 and stop_calls == 0


@pytest.mark.parametrize("skip", [True, False])
def test_random_tokens_special_ones_included_decode_the_same_piece_by_piece(tokenizer, skip):
    import random

    rng = random.Random(7)
    for _ in range(20):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 60))]
        pieces, _ = _stream(tokenizer, ids, skip=skip)
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=skip)


def test_the_streamer_cuts_at_a_stop_string_and_stops_generation_once(tokenizer):
    ids = tokenizer("The quick brown fox jumps", add_special_tokens=False)["input_ids"]
    pieces, stop_calls = _stream(tokenizer, ids, stops=("brown",))
    assert "".join(pieces) == "The quick "
    assert stop_calls == 1


def test_a_generation_that_never_began_streams_nothing(tokenizer):
    assert _stream(tokenizer, []) == ([], 0)
