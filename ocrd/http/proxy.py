"""Forwarding OpenAI requests to a runner, and translating what can go wrong on the way.

Upstream errors in OpenAI's shape pass through with their status; anything unparseable is 502;
a refused connection is 503; a timeout 504 (after KServe's openai_proxy_model). Streams are
relayed event by event, so a runner that dies mid-stream never leaves the client with half an
event: it gets one ``data: {"error": ...}`` event and ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import JSONResponse

from ocrd.errors import ModelNotReady, OcrdError, UpstreamError, UpstreamTimeout
from ocrd.runners.base import Runner

log = logging.getLogger("ocrd.proxy")

CHAT_PATH = "/v1/chat/completions"
DONE_EVENT = b"data: [DONE]\n\n"


async def complete(runner: Runner, body: dict[str, Any]) -> JSONResponse:
    """A non-streaming request: the runner's JSON answer, or its error, as a response."""
    try:
        response = await runner.client().post(CHAT_PATH, json=body)
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    payload = _json_or_none(response.content)
    if response.status_code == 200 and isinstance(payload, dict) and "choices" in payload:
        return JSONResponse(payload)
    if _is_openai_error(payload) and response.status_code >= 400:
        return JSONResponse(payload, status_code=response.status_code)
    raise UpstreamError(
        f"the runner of {runner.model_id} answered with an unexpected HTTP {response.status_code}"
    )


async def open_stream(runner: Runner, body: dict[str, Any]) -> httpx.Response:
    """Starts a streaming request; errors before the first event become ordinary HTTP errors."""
    client = runner.client()
    request = client.build_request("POST", CHAT_PATH, json=body)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    if response.status_code == 200:
        return response
    try:
        content = await response.aread()
    except httpx.HTTPError as exc:
        raise _transport_error(runner, exc) from None
    finally:
        await response.aclose()
    payload = _json_or_none(content)
    if _is_openai_error(payload) and response.status_code >= 400:
        raise _PassThrough(payload, response.status_code)
    raise UpstreamError(
        f"the runner of {runner.model_id} answered with an unexpected HTTP {response.status_code}"
    )


async def relay_events(runner: Runner, response: httpx.Response) -> AsyncIterator[bytes]:
    """Relays server-sent events whole; ends with an error event if the runner fails mid-way."""
    event: list[str] = []
    done = False
    try:
        async for line in response.aiter_lines():
            if line:
                event.append(line)
                continue
            if not event:
                continue
            if event == ["data: [DONE]"]:
                done = True
            yield ("\n".join(event) + "\n\n").encode()
            event = []
        if not done:
            raise UpstreamError(
                f"the runner of {runner.model_id} ended the stream early (it may have crashed; "
                f"see `ocrctl ps`)"
            )
    except (httpx.HTTPError, OcrdError) as exc:
        error = exc if isinstance(exc, OcrdError) else _transport_error(runner, exc)
        log.warning("stream from %s failed: %s", runner.model_id, error.message)
        yield stream_error_event(error)
        yield DONE_EVENT
    finally:
        await response.aclose()


def stream_error_event(error: OcrdError) -> bytes:
    return b"data: " + json.dumps(error.to_openai()).encode() + b"\n\n"


class _PassThrough(OcrdError):
    """An error answer of the runner, relayed to the client as it is."""

    def __init__(self, payload: dict[str, Any], status: int):
        error = payload["error"]
        super().__init__(str(error.get("message", "")), param=error.get("param"),
                         code=error.get("code"))
        self.http_status = status
        self.openai_type = str(error.get("type") or "server_error")


def _transport_error(runner: Runner, exc: httpx.HTTPError) -> OcrdError:
    model = runner.model_id
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the runner of {model} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return ModelNotReady(f"the runner of {model} is not reachable (it may have just exited)")
    return UpstreamError(
        f"the runner of {model} closed the connection mid-request (it may have crashed; "
        f"see `ocrctl ps`)"
    )


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _is_openai_error(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("error"), dict)
        and "message" in payload["error"]
    )
