"""ocrd.runners.vllm.container.last_words: the log line a crashed container's failure quotes."""

from __future__ import annotations

from ocrd.runners.vllm.container import last_words

ACCESS = 'INFO:     172.17.0.1:34826 - "POST /v1/chat/completions HTTP/1.1" 200'


def test_an_access_line_written_after_the_crash_message_is_not_the_reason():
    lines = ["INFO 05-01 10:00:00 [api_server] started", "ERROR 05-01 10:00:01 EngineCore died: OOM", ACCESS]
    assert last_words(lines) == "ERROR 05-01 10:00:01 EngineCore died: OOM"


def test_the_last_line_is_the_reason_otherwise_and_access_lines_alone_are_still_quoted():
    assert last_words(["loading", "Killed"]) == "Killed"
    assert last_words([ACCESS]) == ACCESS
