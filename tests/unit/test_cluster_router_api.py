"""ocrd.cluster.router_api: the requests sent to vllm-router's worker API (bodies and answers as
0.1.17 gives them, recorded from the real router), and every way a call can fail turned into one
RouterUnavailable naming the router and the call."""

from __future__ import annotations

import json

import httpx
import pytest

from ocrd.cluster.router_api import RouterApi, Worker
from ocrd.errors import RouterUnavailable

ROUTER = "http://router:30000"
URL = "http://10.0.0.5:8000/cluster/builtin--ppocr"

# GET /workers of vllm-router 0.1.17 with one worker (trimmed of nothing).
LISTED = {"workers": [{"id": "0475c016-7bb7-4044-8dbc-c6014be43ce3", "url": URL,
                       "model_id": "builtin/ppocr", "priority": 50, "cost": 1.0,
                       "worker_type": "regular", "is_healthy": False, "load": 0,
                       "connection_mode": "Http", "metadata": {"model_id": "builtin/ppocr"}}],
          "total": 1, "stats": {"total_workers": 1, "healthy_workers": 0, "total_models": 1,
                                "total_load": 0, "by_type": {"regular": 1, "prefill": 0, "decode": 0}}}
NOT_FOUND = {"error": f"Worker with URL {URL} not found", "code": "WORKER_NOT_FOUND"}


def api(handler) -> RouterApi:
    return RouterApi(ROUTER, 1.0, transport=httpx.MockTransport(handler))


async def test_the_list_is_read_with_each_workers_url_model_and_health():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        return httpx.Response(200, json=LISTED)

    assert await api(handler).workers() == [Worker(URL, "builtin/ppocr", False)]
    assert seen == [("GET", f"{ROUTER}/workers")]


async def test_a_worker_is_added_with_its_url_and_model_id():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"success": True, "message": "Worker x added successfully"})

    await api(handler).add(URL, "builtin/ppocr")
    assert seen == [("POST", "/workers", {"url": URL, "model_id": "builtin/ppocr"})]


async def test_a_worker_is_removed_by_its_whole_url_as_one_path_segment():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        if len(seen) == 1:
            return httpx.Response(200, json={"success": True})
        return httpx.Response(400, json=NOT_FOUND)

    router = api(handler)
    assert await router.remove(URL) is True
    assert await router.remove(URL) is False  # not listed: nothing to withdraw, no failure
    assert seen[0] == "/workers/http%3A%2F%2F10.0.0.5%3A8000%2Fcluster%2Fbuiltin--ppocr"


@pytest.mark.parametrize(("answer", "said"), [
    (httpx.Response(500, text="boom"), "answered GET /workers with 500: boom"),
    (httpx.Response(200, text="<html>"), "with a body that is not JSON: '<html>'"),
    (httpx.Response(200, json={"urls": []}), "without a worker list (KeyError: 'workers'); is it a "
     "vllm-router started with --enable-igw?"),
    (httpx.Response(200, json={"workers": [1]}), "without a worker list (TypeError"),
])
async def test_a_bad_answer_is_one_router_unavailable(answer, said):
    with pytest.raises(RouterUnavailable) as caught:
        await api(lambda request: answer).workers()
    assert caught.value.message.startswith(f"the router at {ROUTER} ")
    assert said in caught.value.message


async def test_no_connection_is_one_router_unavailable_naming_the_call():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(RouterUnavailable) as caught:
        await api(handler).remove(URL)
    assert caught.value.message == (f"the router at {ROUTER} did not answer DELETE /workers: "
                                    "ConnectError: [Errno 111] Connection refused")


async def test_a_refused_removal_other_than_not_found_is_a_failure():
    with pytest.raises(RouterUnavailable, match="answered DELETE /workers with 400"):
        await api(lambda request: httpx.Response(400, json={"error": "x", "code": "OTHER"})).remove(URL)
