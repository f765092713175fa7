"""``[[upstreams]]`` through a real ``ocrd serve``: listed, loaded, used and unloaded (added and
removed by a reload: ``test_daemon_reload.py``).

The upstream servers are real HTTP servers in the test process (``FakeUpstream``); ocrd, ocrctl,
gRPC and the HTTP API are the real ones. The proxy's promises (errors, streams, metrics) have
their own modules, ``test_proxy_*.py``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.daemon import OCRD, REPO, daemon_env, running_daemon
from tests.support.fake_upstream import FakeUpstream
from tests.support.openapi import validate

OWN_MODEL = "acme/fake-ocr"  # not in ocrd's catalog
SERVED_AS = "fake-ocr-served"  # the upstream's name for it
KEY_VARIABLE = "OCRD_TEST_UPSTREAM_KEY"


def check_config(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OCRD, "check-config", "--config", path], capture_output=True, text=True,
                          timeout=60, env=daemon_env(), cwd=REPO)


def test_check_config_accepts_the_example_proxy_config() -> None:
    result = check_config(str(REPO / "examples" / "ocrd-proxy.toml"))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_check_config_rejects_a_bad_upstream_with_one_line_naming_the_key(tmp_path) -> None:
    path = tmp_path / "ocrd.toml"
    path.write_text('[[upstreams]]\nmodel = "acme/ocr"\nurl = "file:///etc/passwd"\n')
    result = check_config(str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ocrd: configuration error: upstreams.0.url: "), result.stderr


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(SERVED_AS, api_key="s3cret") as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(upstream):
    config = {"upstreams": [
        {"model": OWN_MODEL, "url": upstream.url, "served_model_name": SERVED_AS,
         "api_key_env": KEY_VARIABLE},
        # Takes the catalog's dots.ocr over: its aliases and presets go with it.
        {"model": "dots.ocr", "url": upstream.url, "served_model_name": SERVED_AS,
         "api_key_env": KEY_VARIABLE},
    ]}
    with running_daemon(config, env={KEY_VARIABLE: "s3cret"}) as running:
        yield running


def models_json(daemon) -> dict[str, dict]:
    result = daemon.ocrctl("models", "--json")
    assert result.returncode == 0, result.stderr
    return {m["id"]: m for m in json.loads(result.stdout)["models"]}


def test_ocrctl_models_lists_upstream_models_with_their_engine_and_url(daemon, upstream) -> None:
    models = models_json(daemon)
    own, dots = models[OWN_MODEL], models["rednote-hilab/dots.ocr"]
    assert own["engine"] == dots["engine"] == "upstream"
    assert upstream.url in own["description"] and upstream.url in dots["description"]
    assert "dots.ocr" in dots["aliases"]


def test_chat_through_ocrd_reaches_the_upstream_under_its_own_name(daemon, upstream) -> None:
    with daemon.openai_client() as client:
        reply = client.chat.completions.create(
            model=OWN_MODEL, messages=[{"role": "user", "content": "hello upstream"}])
    validate("CreateChatCompletionResponse", reply.to_dict())
    assert reply.choices[0].message.content == f"fake-vllm {SERVED_AS} read: hello upstream"
    forwarded = upstream.requests[-1]
    assert forwarded["model"] == SERVED_AS and "ocrd" not in forwarded


def test_a_preset_of_the_catalog_model_applies_through_its_upstream(daemon, upstream) -> None:
    with daemon.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "dots.ocr:ocr", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "ignored"}]}]})
    assert response.status_code == 200, response.text
    text = upstream.requests[-1]["messages"][-1]["content"][-1]["text"]
    # dots.ocr's "ocr" preset, with the vLLM image tokens the catalog puts before it.
    assert text == "<|img|><|imgpad|><|endofimg|>Extract the text content from this image."


def test_ocrctl_ps_shows_a_loaded_upstream_with_its_url_and_unload_forgets_it(daemon, upstream) -> None:
    load = daemon.ocrctl("load", OWN_MODEL)
    assert load.returncode == 0, load.stderr
    assert "pid" not in load.stdout + load.stderr and "ready" in load.stdout + load.stderr, load  # no process of ocrd's
    shown = daemon.ps()[OWN_MODEL]
    assert (shown["engine"], shown["device"], shown["state"]) == ("upstream", upstream.url, "MODEL_STATE_READY")
    assert not shown.get("pid") and not int(shown.get("memoryBytes", 0))
    explain = daemon.ocrctl("mode", "explain", OWN_MODEL)
    assert explain.returncode == 0 and upstream.url in explain.stdout, explain.stdout
    unload = daemon.ocrctl("unload", OWN_MODEL)
    assert unload.returncode == 0, unload.stderr
    assert OWN_MODEL not in daemon.ps()
    # Nothing was stopped: the server still answers.
    with daemon.openai_client() as client:
        client.chat.completions.create(model=OWN_MODEL, messages=[{"role": "user", "content": "again"}])


def test_loads_that_cannot_reach_or_find_the_model_fail_with_one_line_each(tmp_path) -> None:
    down = FakeUpstream()
    down.stop()
    with FakeUpstream("org/another") as elsewhere:
        config = {"upstreams": [
            {"model": "acme/refused", "url": down.url},
            {"model": "acme/no-dns", "url": "http://no-such-host.invalid:8000/v1"},
            {"model": "acme/not-listed", "url": elsewhere.url},
        ]}
        with running_daemon(config) as daemon:
            expected = {"acme/refused": "cannot be reached (Connection refused)",
                        "acme/no-dns": "cannot be reached",
                        "acme/not-listed": "does not serve 'acme/not-listed' (it lists: org/another)"}
            for model, words in expected.items():
                result = daemon.ocrctl("load", model)
                assert result.returncode == 1, result
                line = result.stderr.strip()
                assert "\n" not in line and line.startswith("ocrctl: ") and words in line, line
            # `ocrctl ps` lists each failed load's error under the table, naming the model once.
            errors = daemon.ocrctl("ps").stdout.split("\n\n")[1].splitlines()
            assert [line.split(": ", 1)[0] for line in errors] == list(expected), errors
            assert all(line.startswith(f"{model}: the upstream server at ") and words in line
                       for line, (model, words) in zip(errors, expected.items(), strict=True)), errors
            with daemon.http() as http:
                response = http.post("/v1/chat/completions", json={
                    "model": "acme/refused", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 503
            assert "cannot be reached" in response.json()["error"]["message"]
            # The daemon's log says it as a warning, naming the model once too.
            failed = [line for line in daemon.stderr().splitlines() if "model.failed acme/refused" in line]
            assert failed and all(" WARNING ocrd.core.scheduler: model.failed acme/refused: the upstream " in line
                                  for line in failed), failed
