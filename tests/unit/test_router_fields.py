"""What vllm-router adds to a chat body is accepted, at the daemon (strict) and at a runner
(lenient), and the fields ocrd uses are checked as strictly as before.

vllm-router 0.1.17 (``--enable-igw``) forwards a chat request with these fields set, whatever the
client sent (recorded from the real router; tests/integration/test_router.py sends requests
through it to real daemons). ocrd's request models keep unknown fields (``extra="allow"``,
ocrd.openai_types), so nothing had to change; this test keeps it that way."""

from __future__ import annotations

import copy

import pytest

from ocrd.errors import InvalidRequest
from ocrd.http.openai.protocol import parse_chat_request
from ocrd.openai_types import ChatRequest, parse_body_as

ROUTER_FIELDS = {
    "stream": False, "logprobs": False, "no_stop_trim": False, "ignore_eos": False,
    "continue_final_message": False, "skip_special_tokens": True, "separate_reasoning": True,
    "stream_reasoning": True, "return_hidden_states": False, "include_reasoning": True,
}
CLIENT_SENT = {
    "model": "ppocr", "max_tokens": 5, "ocrd": {"preset": "ocr"},
    "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Extract text"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
}
FORWARDED = {**CLIENT_SENT, **ROUTER_FIELDS}


def test_the_daemon_accepts_the_routers_fields_and_keeps_them_for_the_runner():
    request = parse_chat_request(copy.deepcopy(FORWARDED))
    assert request.model == "ppocr" and request.stream is False and request.token_limit == 5
    extra = {key: value for key, value in ROUTER_FIELDS.items() if key != "stream"}
    assert request.model_extra == extra
    # The router's skip_special_tokens is its own top-level field; ocrd's stays in "ocrd".
    assert request.ocrd is not None and request.ocrd.preset == "ocr"
    assert request.ocrd.skip_special_tokens is None


def test_a_runner_accepts_them_too():
    request = parse_body_as(ChatRequest, copy.deepcopy(FORWARDED), lenient=True)
    assert request.model_extra is not None and set(request.model_extra) == set(ROUTER_FIELDS) - {"stream"}


@pytest.mark.parametrize(("field", "value", "param"), [
    ("stream", "yes", "stream"),
    ("n", 2, "n"),
    ("max_tokens", 0, "max_tokens"),
    ("ocrd", "ocr", "ocrd"),
    ("messages", [], "messages"),
])
def test_the_fields_ocrd_uses_are_still_checked_strictly_beside_them(field, value, param):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request({**copy.deepcopy(FORWARDED), field: value})
    assert caught.value.param == param
