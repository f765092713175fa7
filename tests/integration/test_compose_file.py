"""docker-compose-vllm.yml, as Docker Compose itself reads it (Debian's docker-compose 1.29).

``docker-compose --profile P config`` must accept the file for every profile. The rendered config
(variables substituted, anchors merged) is then checked for what the file promises: which services
each profile runs, GPU shares that fit one GPU, the shared cache mounted where vLLM looks, loopback
ports, and a proxy whose upstreams are the file's own services. Needs the docker-compose program
only, not an engine: skipped without it, failed instead under OCRD_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.docker_engine import REQUIRE_ENV

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose-vllm.yml"
PROFILES = ["default", "multi-model", "proxy"]
VLLM_IMAGE_PREFIX = "vllm/vllm-openai:"
HF_INSIDE = "/root/.cache/huggingface"
_COMPOSE_VARIABLES = ("HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN", "VLLM_IMAGE", "VLLM_GPU", "OCRD_IMAGE")


_rendered: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}


def compose_config(profile: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as Compose renders it for ``profile`` (each once per session: ~1 s a call)."""
    key = (profile, tuple(sorted((env or {}).items())))
    if key not in _rendered:
        _rendered[key] = _render(profile, env or {})
    return _rendered[key]


def _render(profile: str, env: dict[str, str]) -> dict[str, Any]:
    program = shutil.which("docker-compose")
    if program is None:
        reason = "needs Debian's docker-compose (scripts/test installs it as root)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the docker-compose program is missing", pytrace=False)
        pytest.skip(reason)
    profile_args = [] if profile == "default" else ["--profile", profile]
    result = subprocess.run(
        [program, "-f", str(COMPOSE_FILE), *profile_args, "config"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**_without_compose_variables(os.environ), "HOME": "/home/ocrd-test", **env},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _without_compose_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus the variables the file reads: each test says what it sets."""
    return {k: v for k, v in environ.items()
            if k not in _COMPOSE_VARIABLES and not k.endswith("_GPU_SHARE")}


def services_of(config: dict[str, Any], profile: str) -> dict[str, Any]:
    """The services `up` starts with ``profile``: those without profiles, and the profile's own."""
    return {name: service for name, service in config["services"].items()
            if not service.get("profiles") or profile in service["profiles"]}


def vllm_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s["image"].startswith(VLLM_IMAGE_PREFIX)}


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_accepts_every_profile(profile):
    assert compose_config(profile)["services"]


@pytest.mark.parametrize("profile, expected", [
    ("default", {"dots-ocr"}),
    ("multi-model", {"dots-ocr", "qwen2-vl-2b", "granite-docling"}),
    ("proxy", {"dots-ocr", "ocrd"}),
])
def test_each_profile_runs_its_services(profile, expected):
    assert set(services_of(compose_config(profile), profile)) == expected


@pytest.mark.parametrize("profile", PROFILES)
def test_gpu_shares_of_servers_on_one_gpu_add_up_to_less_than_one(profile):
    servers = vllm_services(services_of(compose_config(profile), profile))
    shares = [float(flag_value(s["command"], "--gpu-memory-utilization")) for s in servers.values()]
    assert shares and sum(shares) < 1
    devices = {tuple(s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]) for s in servers.values()}
    assert devices == {("0",)}


def test_every_vllm_server_is_set_up_the_same_way():
    config = compose_config("multi-model", env={"HF_HOME": "/srv/hf", "HF_HUB_OFFLINE": "1"})
    for name, service in vllm_services(config["services"]).items():
        assert service["command"][0] == flag_value(service["command"], "--served-model-name"), name
        assert service["volumes"] == [f"/srv/hf:{HF_INSIDE}:rw"], name
        assert service["environment"]["HF_HOME"] == HF_INSIDE, name
        assert service["environment"]["HF_HUB_OFFLINE"] == "1", name
        assert service["ipc"] == "host" and service["init"] is True, name
        assert "/health" in " ".join(service["healthcheck"]["test"]), name
        gpu = service["deploy"]["resources"]["reservations"]["devices"][0]
        assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"], name


def test_the_cache_defaults_to_the_users_and_offline_is_off_by_default():
    dots = compose_config("default")["services"]["dots-ocr"]
    assert dots["volumes"] == [f"/home/ocrd-test/.cache/huggingface:{HF_INSIDE}:rw"]
    assert dots["environment"]["HF_HUB_OFFLINE"] == "0"


def test_every_port_is_published_on_loopback_only():
    config = compose_config("proxy")
    published = [port for service in config["services"].values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published)
    host_ports = [str(port).split(":")[1] for port in published]
    assert len(set(host_ports)) == len(host_ports)


def test_the_proxy_routes_to_the_files_own_vllm_services():
    config = compose_config("proxy")
    ocrd = config["services"]["ocrd"]
    mounted = next(v for v in ocrd["volumes"] if v.endswith(":/etc/ocrd/ocrd.toml:ro"))
    proxy_config = tomllib.loads(Path(mounted.split(":")[0]).read_text())
    assert proxy_config["http"] == {"host": "0.0.0.0", "port": 8000}
    assert ocrd["ports"] == ["127.0.0.1:8000:8000/tcp"]
    servers = vllm_services(config["services"])
    served = {flag_value(s["command"], "--served-model-name"): name for name, s in servers.items()}
    routes = {u["model"]: urlsplit(u["url"]) for u in proxy_config["upstreams"]}
    assert set(routes) == set(served)
    for model, url in routes.items():
        assert (url.hostname, url.port, url.path) == (served[model], 8000, "/v1"), model
    assert (REPO / ocrd["build"]["dockerfile"]).is_file()
