"""The ``[cluster]`` settings (ocrd.config.cluster): off by default, URLs checked with one line
naming the key and saying what a URL looks like, durations in any unit, the variables that set
them in a container (OCRD_CLUSTER__...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrd.config.loading import load_settings
from ocrd.errors import ConfigError
from tests.support.files import write

pytestmark = pytest.mark.usefixtures("isolated_config")


def test_registration_is_off_by_default():
    cluster = load_settings().cluster
    assert (cluster.router_url, cluster.advertise_url) == ("", "")
    assert (cluster.interval, cluster.timeout) == (10.0, 3.0)


def test_a_file_sets_the_router_and_the_address_without_trailing_slashes(tmp_path: Path):
    config = write(tmp_path / "ocrd.toml", """
        [cluster]
        router_url = "http://router.ocr.svc:30000/"
        advertise_url = "https://node-3.example:8443/ocr/"
        interval = "30s"
        timeout = "500ms"
        """)
    cluster = load_settings(config).cluster
    assert cluster.router_url == "http://router.ocr.svc:30000"
    assert cluster.advertise_url == "https://node-3.example:8443/ocr"
    assert (cluster.interval, cluster.timeout) == (30.0, 0.5)


def test_a_pods_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    # What the Kubernetes downward API gives a container (docs/scale-out.md).
    monkeypatch.setenv("OCRD_CLUSTER__ADVERTISE_URL", "http://10.244.1.7:8000")
    monkeypatch.setenv("OCRD_CLUSTER__ROUTER_URL", "http://vllm-router:30000")
    cluster = load_settings().cluster
    assert (cluster.router_url, cluster.advertise_url) == ("http://vllm-router:30000",
                                                           "http://10.244.1.7:8000")


@pytest.mark.parametrize(("key", "value"), [
    ("router_url", "router:30000"),
    ("router_url", "ftp://router:30000"),
    ("router_url", "http://"),
    ("router_url", "http://router:99999"),
    ("advertise_url", "http://node:8000/?model=x"),
    ("advertise_url", "http://user@node:8000"),
])
def test_a_value_that_is_no_http_url_is_refused_in_one_line_naming_the_key(tmp_path: Path, key, value):
    config = write(tmp_path / "ocrd.toml", f'[cluster]\n{key} = "{value}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = caught.value.message
    assert message.startswith(f"cluster.{key}: ") and "\n" not in message
    assert "http(s) URL such as http://router:30000" in message
    assert str(config) in message


@pytest.mark.parametrize(("key", "value"), [("interval", 0), ("timeout", "0s"), ("interval", "soon")])
def test_intervals_and_timeouts_must_be_positive_durations(tmp_path: Path, key, value):
    shown = f'"{value}"' if isinstance(value, str) else value
    config = write(tmp_path / "ocrd.toml", f"[cluster]\n{key} = {shown}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert caught.value.message.startswith(f"cluster.{key}: ")


def test_an_unknown_key_is_refused(tmp_path: Path):
    config = write(tmp_path / "ocrd.toml", '[cluster]\nrouter = "http://r:1"\n')
    with pytest.raises(ConfigError, match=r"cluster\.router: unknown key"):
        load_settings(config)
