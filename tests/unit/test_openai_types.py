"""The request models the daemon and its runners share (ocrd.openai_types): the same fields,
validated strictly by the daemon and leniently by a runner; one token-limit rule; and the helper
that stops work for a client that hung up."""

from __future__ import annotations

import asyncio
import json

import pytest

from ocrd.errors import InvalidRequest
from ocrd.http.openai.protocol import parse_chat_request
from ocrd.openai_types import DONE, unless_disconnected
from ocrd.worker.chat_input import generation_params, parse_request

MESSAGES = [{"role": "user", "content": "Read this."}]


def in_the_runner(**fields):
    return parse_request(json.dumps({"messages": MESSAGES, **fields}).encode())


def in_the_daemon(**fields):
    return parse_chat_request({"model": "builtin/ppocr", "messages": MESSAGES, **fields})


def test_a_runner_coerces_json_types_that_the_daemon_refuses():
    with pytest.raises(InvalidRequest) as refused:
        in_the_daemon(stream="true", max_tokens="5")
    assert refused.value.param == "stream"
    request = in_the_runner(stream="true", max_tokens="5")
    assert request.stream is True and generation_params(request).max_tokens == 5


@pytest.mark.parametrize(("fields", "limit"), [
    ({"max_tokens": 7}, 7),
    ({"max_completion_tokens": 7}, 7),
    ({"max_tokens": 3, "max_completion_tokens": 7}, 7),
    ({"max_tokens": 9, "max_completion_tokens": 7}, 7),
    ({}, None),
])
def test_the_daemon_and_a_runner_read_one_token_limit_max_completion_tokens_first(fields, limit):
    assert in_the_daemon(**fields).token_limit == limit
    assert generation_params(in_the_runner(**fields)).max_tokens == limit


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages.0.content.0.type"),
    ({"ocrd": "ocr"}, "ocrd"),
    ({"ocrd": {"skip_special_tokens": "maybe"}}, "ocrd.skip_special_tokens"),
])
def test_what_the_daemon_refuses_a_runner_refuses_with_the_same_param(fields, param):
    for parse in (in_the_daemon, in_the_runner):
        with pytest.raises(InvalidRequest) as refused:
            parse(**fields)
        assert refused.value.param == param, parse


def test_the_done_event_is_openais():
    assert DONE == b"data: [DONE]\n\n"


async def test_work_for_a_client_still_there_finishes():
    async def connected() -> bool:
        return False

    async def work() -> str:
        await asyncio.sleep(0.3)  # longer than one poll: the watcher asks at least once
        return "done"

    assert await unless_disconnected(work(), connected) == "done"


async def test_work_for_a_client_that_hung_up_is_cancelled():
    cancelled = asyncio.Event()

    async def gone() -> bool:
        return True

    async def work() -> str:
        try:
            await asyncio.Event().wait()  # would never finish
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    assert await unless_disconnected(work(), gone) is None
    assert cancelled.is_set()
