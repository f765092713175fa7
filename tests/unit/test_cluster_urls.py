"""ocrd.cluster.urls: the URL each model is registered at with the router, and ``ClusterPaths``,
which serves those URLs as the root (the router keeps a worker URL's path and appends the API's)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from ocrd.cluster.urls import ClusterPaths, default_advertise_url, model_path, model_url


def test_each_name_gets_a_path_of_its_own_and_ids_with_an_org_keep_it_readable():
    assert model_path("builtin/ppocr") == "/cluster/builtin--ppocr"
    assert model_path("ppocr") == "/cluster/ppocr"
    assert model_url("http://10.0.0.5:8000", "rednote-hilab/dots.ocr") == (
        "http://10.0.0.5:8000/cluster/rednote-hilab--dots.ocr")
    # Model ids never hold "--" (the Hub's rule, ocrd.model_ids), so "a/b" and "a-b" differ.
    assert model_path("a/b") != model_path("a-b")


@pytest.mark.parametrize(("listener", "expected"), [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://10.1.2.3:9000", "http://10.1.2.3:9000"),
    ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_the_default_advertised_url_is_the_listener_as_bound(listener, expected):
    assert default_advertise_url(listener) == expected


@pytest.mark.parametrize("listener", ["http://0.0.0.0:8000", "http://[::]:8000"])
def test_a_wildcard_listener_is_advertised_by_this_machines_host_name(listener):
    assert default_advertise_url(listener) == f"http://{socket.gethostname()}:8000"


async def _echo_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers with the path and raw path it was given."""
    body = f"{scope['path']} {scope['raw_path'].decode()} {scope['query_string'].decode()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _seen(path: str) -> str:
    transport = httpx.ASGITransport(app=ClusterPaths(_echo_scope))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        return (await client.get(path)).text


@pytest.mark.parametrize(("sent", "served"), [
    ("/cluster/builtin--ppocr/v1/chat/completions", "/v1/chat/completions /v1/chat/completions "),
    ("/cluster/ppocr/health", "/health /health "),
    ("/cluster/ppocr", "/ / "),
    ("/cluster/ppocr/v1/models?x=1", "/v1/models /v1/models x=1"),
    # Not a model's URL: passed on as it is (the app answers 404, as to any unknown path).
    ("/cluster/bad%20name/health", "/cluster/bad name/health /cluster/bad%20name/health "),
    ("/v1/models", "/v1/models /v1/models "),
    ("/clusterx/ppocr/health", "/clusterx/ppocr/health /clusterx/ppocr/health "),
])
async def test_a_models_url_is_served_as_the_root(sent, served):
    assert await _seen(sent) == served


async def test_an_encoded_name_is_taken_off_the_raw_path_too():
    # %70 is "p": the decoded path has the name, the raw path as sent does not start with it.
    assert await _seen("/cluster/%70pocr/v1/models") == "/v1/models /v1/models "


async def test_other_scopes_pass_untouched():
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope = {"type": "lifespan", "path": "/cluster/x/y"}
    await ClusterPaths(app)(scope, None, None)  # type: ignore[arg-type]
    assert seen == [scope]
