"""The builtin runner process, for real: `python -m ocrd.worker` with rapidocr and tesseract.

Each backend's runner is started once per module; tests talk to it over its Unix socket with
httpx, as the daemon does. Start-up, failure and shutdown tests start their own runners, using the
tesseract backend where they can because it loads in about a second.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from tests.support import damage
from tests.support.render import char_accuracy, data_url, render_text_image
from tests.support.worker import Worker, complete, running, stream_events, temp_workdir, worker_env

# Hang guards only (a broken runner must not stall the suite); nothing asserts on speed.
START_TIMEOUT = 240.0
EXIT_TIMEOUT = 60.0

ENGLISH = [
    "ocrd serves OCR models over an OpenAI API.",
    "Every model runs in its own process.",
    "The builtin engine needs no GPU at all.",
]
ENGLISH_2 = ["Second page, first line.", "It ends here: 42 items."]
RUSSIAN = [
    "Съешь же ещё этих мягких французских булок,",
    "да выпей чаю. Распознавание текста работает",
    "без видеокарты и без доступа к сети.",
]


def start_worker(workdir: Path, name: str, options: dict, prefix: Sequence[str] = ()) -> Worker:
    return Worker(workdir, name, engine="builtin", options=options, env=worker_env(), model_id="builtin/test",
                  prefix=prefix, start_timeout=START_TIMEOUT, exit_timeout=EXIT_TIMEOUT, client_timeout=120)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    yield from temp_workdir("ocrdw-")


@pytest.fixture(scope="module")
def ppocr(workdir: Path) -> Iterator[Worker]:
    yield from running(start_worker(workdir, "ppocr", {"backend": "ppocr", "det_limit_side_len": 960}))


@pytest.fixture(scope="module")
def tesseract(workdir: Path) -> Iterator[Worker]:
    options = {"backend": "tesseract", "tesseract_cmd": "tesseract", "languages": "eng+rus", "psm": 3}
    yield from running(start_worker(workdir, "tesseract", options))


@pytest.fixture(scope="module")
def ppocr_plain(workdir: Path) -> Iterator[Worker]:
    """PP-OCR reading every image as it comes (preprocess off), to compare with."""
    options = {"backend": "ppocr", "det_limit_side_len": 960, "preprocess": "off"}
    yield from running(start_worker(workdir, "ppocr-plain", options))


@pytest.fixture(scope="module")
def tesseract_plain(workdir: Path) -> Iterator[Worker]:
    options = {"backend": "tesseract", "languages": "eng+rus", "psm": 3, "preprocess": "off"}
    yield from running(start_worker(workdir, "tesseract-plain", options))


def chat_body(*pngs: bytes, text: str = "Read the text in the image.", **extra) -> dict:
    content = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": data_url(png)}} for png in pngs]
    return {"model": "builtin/test", "messages": [{"role": "user", "content": content}], **extra}


def content_of(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


# --- start-up protocol ---------------------------------------------------------------------------


def test_progress_events_come_before_ready(ppocr: Worker, tesseract: Worker):
    steps = {
        ppocr: [("importing rapidocr", 0.1), ("loading detection and recognition models", 0.4),
                ("warm-up", 0.8)],
        tesseract: [("checking tesseract", 0.2), ("checking language packs", 0.5), ("warm-up", 0.8)],
    }
    for worker, expected in steps.items():
        *progress, ready = worker.events
        assert all(e["event"] == "progress" for e in progress)
        assert [(e["stage"], e["progress"]) for e in progress] == expected
        assert all(isinstance(e["message"], str) and e["message"] for e in progress)
        assert ready == {"event": "ready", "pid": worker.proc.pid, "memory_bytes": ready["memory_bytes"]}
        assert isinstance(ready["memory_bytes"], int) and ready["memory_bytes"] > 10_000_000


def test_socket_is_private_and_health_and_models_answer(ppocr: Worker):
    assert stat.S_IMODE(os.stat(ppocr.socket).st_mode) == 0o600
    with ppocr.client() as client:
        assert client.get("/health").json() == {"status": "ok", "model": "builtin/test"}
        models = client.get("/v1/models").json()
    assert models["object"] == "list"
    [card] = models["data"]
    assert card["id"] == "builtin/test" and card["object"] == "model" and card["owned_by"] == "ocrd"
    assert isinstance(card["created"], int)


def test_runner_does_not_load_torch(ppocr: Worker):
    # The builtin engine must stay light; /proc/PID/maps lists every shared object loaded.
    maps = Path(f"/proc/{ppocr.proc.pid}/maps").read_text()
    assert "libtorch" not in maps


# --- OCR ----------------------------------------------------------------------------------------


def test_english_lines_via_ppocr(ppocr: Worker):
    result = complete(ppocr, chat_body(render_text_image(ENGLISH), text="Please read this image"))
    text = content_of(result)
    assert char_accuracy("\n".join(ENGLISH), text) >= 0.95, text
    assert len(text.split("\n")) == len(ENGLISH)  # one output line per text line
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {
        "prompt_tokens": 4,  # words of the text part
        "completion_tokens": len(text.split()),
        "total_tokens": 4 + len(text.split()),
    }


def test_russian_lines_via_tesseract(tesseract: Worker):
    text = content_of(complete(tesseract, chat_body(render_text_image(RUSSIAN))))
    assert char_accuracy("\n".join(RUSSIAN), text) >= 0.90, text
    assert len(text.split("\n")) == len(RUSSIAN)


def test_two_images_give_both_texts_in_order(ppocr: Worker):
    text = content_of(complete(ppocr, chat_body(render_text_image(ENGLISH), render_text_image(ENGLISH_2))))
    first, second = text.split("\n\n")
    assert char_accuracy("\n".join(ENGLISH), first) >= 0.95, text
    assert char_accuracy("\n".join(ENGLISH_2), second) >= 0.95, text


def test_stream_equals_non_stream_and_events_come_in_order(ppocr: Worker):
    pngs = (render_text_image(ENGLISH_2), render_text_image(ENGLISH[:1]))
    plain = complete(ppocr, chat_body(*pngs))
    events = stream_events(ppocr, chat_body(*pngs, stream=True, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    role, *contents, finish, usage_chunk, _ = events
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"]["content"] for c in contents) == content_of(plain)
    assert len(contents) == len(content_of(plain).split("\n"))  # one chunk per output line
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["choices"][0]["finish_reason"] is None for c in [role, *contents])


def test_stream_without_usage_has_no_usage_chunk(tesseract: Worker):
    events = stream_events(tesseract, chat_body(render_text_image(["Just one line."]), stream=True))
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events[:-1])


def test_max_tokens_cuts_the_output_in_words(ppocr: Worker):
    png = render_text_image(ENGLISH)
    result = complete(ppocr, chat_body(png, max_tokens=2))
    assert len(content_of(result).split()) == 2
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 2
    events = stream_events(ppocr, chat_body(png, stream=True, max_completion_tokens=2))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == content_of(result)
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_stop_string_cuts_before_its_first_occurrence(tesseract: Worker):
    result = complete(tesseract, chat_body(render_text_image(["keep this STOP drop that"]), stop=["STOP"]))
    assert content_of(result).strip() == "keep this"
    assert result["choices"][0]["finish_reason"] == "stop"


def test_responses_validate_against_openai_schemas(ppocr: Worker):
    from tests.support.openapi import validate

    png = render_text_image(ENGLISH_2)
    validate("CreateChatCompletionResponse", complete(ppocr, chat_body(png)))
    events = stream_events(ppocr, chat_body(png, stream=True, stream_options={"include_usage": True}))
    for chunk in events[:-1]:
        validate("CreateChatCompletionStreamResponse", chunk)


# --- bad input ----------------------------------------------------------------------------------


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


BAD_REQUESTS = {
    "bad base64": [_image_part("data:image/png;base64,%%%not-base64%%%")],
    "not an image": [_image_part(data_url(b"these bytes are no picture at all"))],
    "no image": [{"type": "text", "text": "There is no image here."}],
}


@pytest.mark.parametrize("case", [*BAD_REQUESTS, "n=2"])
def test_bad_input_is_400_with_openai_error_envelope(tesseract: Worker, case: str):
    if case == "n=2":
        body = chat_body(render_text_image(["x"]), n=2)
    else:
        body = {"model": "builtin/test", "messages": [{"role": "user", "content": BAD_REQUESTS[case]}]}
    for stream in (False, True):
        with tesseract.client() as client:
            response = client.post("/v1/chat/completions", json={**body, "stream": stream})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["message"]
    with tesseract.client() as client:
        assert client.get("/health").status_code == 200  # the runner is fine afterwards


# --- failures and lifecycle ---------------------------------------------------------------------


def test_missing_language_pack_is_an_error_event_and_exit_1(workdir: Path):
    worker = start_worker(workdir, "nolang", {"backend": "tesseract", "languages": "eng+xxx", "psm": 3})
    final = worker.until_final()
    assert final["event"] == "error"
    assert "'xxx'" in final["message"] and "tesseract-ocr-xxx" in final["message"]
    assert "\n" not in final["message"]
    assert worker.proc.wait(timeout=EXIT_TIMEOUT) == 1
    assert worker.next_line() is None  # nothing after the error event
    assert not worker.socket.exists()
    assert "Traceback" not in final["message"]


def test_unknown_backend_exits_2(workdir: Path):
    worker = start_worker(workdir, "nobackend", {"backend": "easyocr"})
    final = worker.until_final()
    assert final["event"] == "error" and "easyocr" in final["message"]
    assert worker.proc.wait(timeout=EXIT_TIMEOUT) == 2
    assert not worker.socket.exists()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(workdir: Path):
    worker = start_worker(workdir, "sigterm", {"backend": "tesseract", "languages": "eng", "psm": 3})
    assert worker.until_final()["event"] == "ready"
    pngs = [render_text_image(ENGLISH)] * 4
    events: list = []
    with worker.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=chat_body(*pngs, stream=True)) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            events.append(json.loads(first[6:]))  # the role chunk: the runner has the request
            worker.proc.send_signal(signal.SIGTERM)
            events += [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[1:-2])
    assert len(text.split("\n\n")) == 4 and char_accuracy("\n".join(ENGLISH), text.split("\n\n")[3]) >= 0.9
    assert worker.proc.wait(timeout=EXIT_TIMEOUT) == 0
    assert not worker.socket.exists()


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: nobody may reap orphans in a container)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_runner_dies_with_its_parent(workdir: Path):
    parent_code = (
        "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); p.wait()"
    )
    options = {"backend": "tesseract", "languages": "eng", "psm": 3}
    parent = start_worker(workdir, "orphan", options, prefix=[sys.executable, "-c", parent_code])
    runner_pid = int(parent.next_line())
    try:
        assert parent.until_final()["event"] == "ready"
        parent.proc.kill()
        parent.proc.wait(timeout=EXIT_TIMEOUT)
        assert parent.next_line() is None  # the pipe closes only when the runner is gone too
        assert _gone(runner_pid) or _wait_gone(runner_pid)
    finally:
        if not _gone(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)


def _wait_gone(pid: int) -> bool:
    # The pipe can close a moment before the kernel marks the process dead.
    for _ in range(int(EXIT_TIMEOUT * 10)):
        if _gone(pid):
            return True
        threading.Event().wait(0.1)
    return False


# --- damaged scans (preprocess auto, the default, against off) -----------------------------------


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def read_text(worker: Worker, image: Image.Image) -> str:
    return content_of(complete(worker, chat_body(png_of(image))))


DAMAGED_LINES = {"en": damage.ENGLISH, "ru": damage.RUSSIAN}


@pytest.mark.parametrize("language", DAMAGED_LINES)
@pytest.mark.parametrize("density", [0.05, 0.10])
def test_tesseract_reads_salt_and_pepper_pages_once_denoised(
        tesseract: Worker, tesseract_plain: Worker, language: str, density: float):
    lines = DAMAGED_LINES[language]
    noisy = damage.salt_and_pepper(damage.page(lines), density)
    plain, cleaned = read_text(tesseract_plain, noisy), read_text(tesseract, noisy)
    assert char_accuracy("\n".join(lines), plain) < 0.90, plain  # the damage, unrepaired
    assert char_accuracy("\n".join(lines), cleaned) >= 0.95, cleaned


@pytest.mark.parametrize("name", ["skew -3.5°", "low contrast, uneven light"])
def test_tesseract_reads_skewed_and_unevenly_lit_pages(tesseract: Worker, name: str):
    for lines in DAMAGED_LINES.values():
        text = read_text(tesseract, damage.damage(name).apply(damage.page(lines)))
        assert char_accuracy("\n".join(lines), text) >= 0.95, text


def test_ppocr_reads_salt_and_pepper_pages(ppocr: Worker):
    text = read_text(ppocr, damage.salt_and_pepper(damage.page(damage.ENGLISH), 0.10))
    assert char_accuracy("\n".join(damage.ENGLISH), text) >= 0.95, text


def test_clean_pages_read_exactly_as_without_preprocessing(
        ppocr: Worker, ppocr_plain: Worker, tesseract: Worker, tesseract_plain: Worker):
    pages = [damage.page(damage.ENGLISH), damage.page(damage.RUSSIAN), damage.blur(damage.page(damage.ENGLISH))]
    for auto, plain in ((ppocr, ppocr_plain), (tesseract, tesseract_plain)):
        for page in pages:
            assert read_text(auto, page) == read_text(plain, page)


def test_blocks_of_a_noisy_skewed_page_are_read_in_the_pages_frame(tesseract: Worker):
    page = damage.salt_and_pepper(damage.skew(damage.page(damage.ENGLISH), 2.5), 0.05)
    body = chat_body(png_of(page), ocrd={"processor_kwargs": {"output": "blocks"}})
    document = json.loads(content_of(complete(tesseract, body)))
    assert (document["width"], document["height"]) == page.size
    text = "\n".join(line["text"] for line in document["lines"])
    assert char_accuracy("\n".join(damage.ENGLISH), text) >= 0.95, text
