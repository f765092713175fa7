"""The README's flow, end to end: ``ocrd serve``, then ``ocrctl ocr examples/sample.png``, then the
README's own curl request and Python snippet against the running daemon.

The expected texts come from ``examples/README.md`` and the requests from ``README.md`` itself, so
this test fails when the documentation and the product drift apart. The daemon gets its own port
and socket through the documented flags (``--port``, ``--socket``, ``--runtime-dir``), so the test
never touches a daemon the machine may already run on the defaults.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import httpx
import pytest

from tests.support.daemon import HTTP_TIMEOUT, REPO, daemon_env, running_daemon
from tests.support.render import char_accuracy

README = REPO / "README.md"
EXAMPLES = REPO / "examples"


def expected_text(image: str) -> str:
    """The text block under ``## <image>`` in examples/README.md."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(image)}\n+```text\n(.*?)\n```", text, re.S | re.M)
    assert match, f"examples/README.md has no text block for {image}"
    return match.group(1)


def readme_block(language: str, containing: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    found = [block for block in blocks if containing in block]
    assert found, f"README.md has no ```{language} block with {containing!r}"
    return found[0]


@pytest.fixture(scope="module")
def daemon():
    quick_start = readme_block("bash", "ocrd serve")
    assert ".venv/bin/ocrd serve" in quick_start
    with running_daemon(flags=True) as running:
        yield running


def test_ocrctl_ocr_reads_the_sample_image(daemon):
    assert ".venv/bin/ocrctl ocr examples/sample.png" in readme_block("bash", "ocrctl ocr")
    result = daemon.ocrctl("ocr", "examples/sample.png")
    assert result.returncode == 0, result.stderr
    assert char_accuracy(expected_text("sample.png"), result.stdout) >= 0.95, result.stdout


def test_ocrctl_ocr_reads_the_russian_sample_with_tesseract(daemon):
    assert "ocrctl ocr --model tesseract examples/sample-ru.png" in README.read_text(encoding="utf-8")
    result = daemon.ocrctl("ocr", "--model", "tesseract", "examples/sample-ru.png")
    assert result.returncode == 0, result.stderr
    assert char_accuracy(expected_text("sample-ru.png"), result.stdout) >= 0.90, result.stdout


def test_the_readme_curl_request_works(daemon):
    curl = readme_block("bash", "curl")
    url = re.search(r"curl -s (\S+)", curl).group(1)
    assert url == "http://127.0.0.1:8000/v1/chat/completions"
    payload = re.search(r"-d '(.*)'\s*$", curl, re.S).group(1)
    image = base64.b64encode((EXAMPLES / "sample.png").read_bytes()).decode()
    body = json.loads(payload.replace("'\"$(base64 -w0 examples/sample.png)\"'", image))
    response = httpx.post(url.replace("http://127.0.0.1:8000", daemon.base_url), json=body,
                          timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    text = response.json()["choices"][0]["message"]["content"]
    assert char_accuracy(expected_text("sample.png"), text) >= 0.95, text


def run_python_snippet(daemon, containing: str, address: str) -> str:
    """The README's python block that contains ``containing``, run as written against ``daemon``
    (its ``address`` replaced by the daemon's); its standard output."""
    snippet = readme_block("python", containing)
    assert address in snippet
    snippet = snippet.replace("http://127.0.0.1:8000", daemon.base_url)
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                            timeout=HTTP_TIMEOUT, cwd=REPO, env=daemon_env())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_python_snippet_works(daemon):
    output = run_python_snippet(daemon, "openai.OpenAI", "http://127.0.0.1:8000/v1")
    assert char_accuracy(expected_text("sample.png"), output) >= 0.95, output


def test_the_readme_mistral_snippet_reads_the_example_pdf(daemon):
    output = run_python_snippet(daemon, "Mistral(", 'server_url="http://127.0.0.1:8000"')
    # examples/sample.pdf is sample.png's text on an A4 page (scripts/make-example-images).
    assert char_accuracy(expected_text("sample.png"), output) >= 0.95, output
