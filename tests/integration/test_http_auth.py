"""HTTP API keys and CORS against a real ``ocrd serve`` (ocrd.http.auth, http.api_keys,
http.cors_origins): the official ``openai`` client with the right key gets in; no key or a wrong
one gets 401 in OpenAI's error shape (checked against OpenAI's published schema) before anything
else happens; ``/health`` and ``/openapi.json`` stay open; keys are stored and logged only as
hashes; a flood of bad keys costs a few log lines; a reload revokes a key; CORS answers only the
configured origins and is off by default.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import openai
import pytest

from ocrd.config.tokens import generate_token, hash_token
from tests.support.daemon import (
    OCRCTL,
    OCRD,
    RunningDaemon,
    assert_openai_error,
    deep_merge,
    ocr_messages,
    running_daemon,
    wait_until,
)
from tests.support.render import render_text_image

APP_KEY = generate_token()
OTHER_KEY = generate_token()
ORIGIN = "https://app.example.com"
KEYS = [{"name": "app", "hash": hash_token(APP_KEY)}, {"name": "other", "hash": hash_token(OTHER_KEY)}]


def keyed_config(keys: list[dict[str, str]]) -> dict:
    return {"http": {"api_keys": keys, "cors_origins": [ORIGIN]}}


@pytest.fixture(scope="module")
def daemon():
    with running_daemon(keyed_config(KEYS)) as running:
        yield running


@pytest.fixture(scope="module")
def http(daemon):
    with daemon.http(timeout=60) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("GET", "/v1/models/ppocr"), ("POST", "/v1/chat/completions"),
     ("POST", "/models/load"), ("POST", "/models/unload"), ("GET", "/metrics"),
     ("GET", "/no/such/route")],
)  # fmt: skip
def test_request_without_a_key_gets_401_in_openai_shape(http, method, path):
    response = http.request(method, path, json={"model": "ppocr"})
    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "authentication_error"
    assert "Authorization: Bearer" in error["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("authorization", "secret"),
    [(f"Bearer {hash_token(APP_KEY)}", hash_token(APP_KEY)),  # the stored hash is no key
     (f"Bearer {APP_KEY}x", APP_KEY), (f"Bearer {APP_KEY[:-1]}", APP_KEY[:-1]),
     (f"bearer {OTHER_KEY[::-1]}", OTHER_KEY[::-1]), (f"Basic {APP_KEY}", APP_KEY),
     (APP_KEY, APP_KEY), ("Bearer", None), (f"Bearer  {'a' * 10_000}", "a" * 10_000)],
)  # fmt: skip
def test_wrong_key_gets_401_and_is_never_repeated(daemon, http, authorization, secret):
    response = http.get("/v1/models", headers={"Authorization": authorization})
    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    if secret is not None:
        assert secret not in response.text
        assert secret not in daemon.stderr()


def test_a_flood_of_bad_keys_costs_a_few_log_lines_and_the_first_names_its_peer():
    # A daemon of its own: the module's daemon has logged the other tests' refusals already.
    with running_daemon(keyed_config(KEYS)) as fresh, fresh.http(timeout=60) as http:
        for _ in range(500):
            assert http.get("/v1/models", headers=bearer(OTHER_KEY[::-1])).status_code == 401
        log = fresh.stderr().splitlines()
    refusals = [line for line in log if " refused: " in line]
    assert 1 <= len(refusals) <= 5, refusals
    assert re.search(r"GET /v1/models from 127\.0\.0\.1:\d+ refused: the API key is not valid",
                     refusals[0]), refusals[0]
    assert len(log) < 50, log  # start-up, a few refusals and stopping: not a line a request


def test_the_openai_client_with_a_key_reads_the_models_and_gets_ocr(daemon):
    client = daemon.openai_client(api_key=APP_KEY, timeout=120)
    assert "builtin/ppocr" in {model.id for model in client.models.list()}
    image = render_text_image(["key accepted"])
    reply = client.chat.completions.create(model="ppocr", messages=ocr_messages(image))
    assert "accepted" in reply.choices[0].message.content
    # The other key works too: each configured key is checked.
    other = daemon.openai_client(api_key=OTHER_KEY)
    assert other.models.retrieve("ppocr").id == "builtin/ppocr"


def test_the_openai_client_without_the_right_key_raises_authentication_error(daemon):
    with pytest.raises(openai.AuthenticationError) as info:
        daemon.openai_client(api_key="sk-" + "0" * 48).models.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_health_and_the_openapi_document_stay_open(http):
    assert http.get("/health").json()["status"] == "ok"
    document = http.get("/openapi.json").json()
    assert "/v1/chat/completions" in document["paths"]


def test_metrics_need_a_key(http):
    assert_openai_error(http.get("/metrics"), 401)
    response = http.get("/metrics", headers=bearer(APP_KEY))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_an_unauthenticated_body_is_refused_before_it_is_read(http):
    # Over limits.max_body_bytes: the key is judged first, so the answer is 401, not 413.
    response = http.post("/v1/chat/completions", content=b"x" * (65 * 2**20))
    assert_openai_error(response, 401)


def test_cors_preflight_from_the_configured_origin_is_answered(http):
    response = http.options("/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_preflight_from_another_origin_gets_no_permission(http):
    response = http.options("/v1/chat/completions", headers={
        "Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_cors_headers_reach_refusals_so_the_browser_can_read_them(http):
    allowed = http.get("/v1/models", headers={"Origin": ORIGIN})
    assert_openai_error(allowed, 401)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = http.get("/v1/models", headers={"Origin": "https://evil.example.net", **bearer(APP_KEY)})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_print_config_shows_hashes_only(daemon):
    result = subprocess.run([OCRD, "print-config", "--config", str(daemon.config_path)],
                            capture_output=True, text=True, timeout=60, env=daemon.env)
    assert result.returncode == 0, result.stderr
    assert hash_token(APP_KEY) in result.stdout
    assert APP_KEY not in result.stdout and OTHER_KEY not in result.stdout


def test_reload_revokes_a_removed_key_at_the_next_request():
    with running_daemon(keyed_config(KEYS)) as daemon, daemon.http(timeout=60) as http:
        assert http.get("/v1/models", headers=bearer(OTHER_KEY)).status_code == 200
        daemon.write_config(deep_merge(daemon.config, keyed_config(KEYS[:1])))
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: http.get("/v1/models", headers=bearer(OTHER_KEY)).status_code == 401,
                   timeout=30, interval=0.2, message="the removed key to be refused")
        assert http.get("/v1/models", headers=bearer(APP_KEY)).status_code == 200


def test_by_default_the_api_binds_loopback_with_no_keys_and_cors_off():
    daemon = RunningDaemon(flags=True)  # no config file: the built-in defaults
    try:
        status = json.loads(daemon.ocrctl("status", "--json").stdout)
        assert status["http_url"] == f"http://127.0.0.1:{daemon.port}"
        with daemon.http(timeout=60) as http:
            response = http.get("/v1/models", headers={"Origin": ORIGIN})
            assert response.status_code == 200
            assert "access-control-allow-origin" not in response.headers
            preflight = http.options("/v1/models", headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
            assert "access-control-allow-origin" not in preflight.headers
    finally:
        daemon.stop()
        daemon.close()


def test_ocrctl_ocr_sends_the_key_from_ocrd_api_key(daemon, tmp_path):
    image = tmp_path / "page.png"
    image.write_bytes(render_text_image(["ocrctl key"]))
    refused = run_ocrctl_env(daemon, {}, "ocr", str(image))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("set $OCRD_API_KEY to one of its keys"), refused.stderr
    wrong = run_ocrctl_env(daemon, {"OCRD_API_KEY": OTHER_KEY[::-1]}, "ocr", str(image))
    assert wrong.returncode == 1 and "refused the key in $OCRD_API_KEY" in wrong.stderr
    assert OTHER_KEY[::-1] not in wrong.stderr
    accepted = run_ocrctl_env(daemon, {"OCRD_API_KEY": APP_KEY}, "ocr", str(image))
    assert accepted.returncode == 0, accepted.stderr
    assert "key" in accepted.stdout


def run_ocrctl_env(daemon, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OCRD_API_KEY"}
    return subprocess.run([OCRCTL, "--address", str(daemon.socket_path), *args],
                          capture_output=True, text=True, timeout=120, env={**environ, **env})
