"""A runner for a model served by an upstream OpenAI server that ocrd does not manage.

``start`` only checks: the server answers ``GET /v1/models`` (with the configured key) and lists
the model under the name it knows it by. Why check at all: a misspelt URL, a missing key or a
server that serves another model then fails the load with one line saying which, instead of every
request failing later with a less precise 503 or 404. ``stop`` forgets the server (closes ocrd's
connections to it); nothing is started or killed, no process is watched, so ``on_exit`` is never
called: an upstream that goes away shows up as 503s on the requests that reach it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx

from ocrd.errors import ModelLoadFailed, ModelNotReady, OcrdError
from ocrd.runners.base import ExitCallback, LoadProgress, ProgressCallback, Runner, RunnerSpec
from ocrd.runners.transport import AiohttpClient

log = logging.getLogger("ocrd.upstream")

# Connecting is quick or hopeless; the request timeout is for generating.
CONNECT_TIMEOUT = 10.0
MODELS_TIMEOUT = 30.0


class UpstreamRunner(Runner):
    """``spec.options``: ``url`` (OpenAI base URL, ending in /v1), ``remote_name``,
    ``api_key_env`` (or None) and ``timeout`` (seconds), as ``ocrd.core.directory`` builds them."""

    def __init__(self, spec: RunnerSpec, *, environ: Mapping[str, str] | None = None):
        self.spec = spec
        self._environ = os.environ if environ is None else environ
        self._client: httpx.AsyncClient | None = None
        options = spec.options
        self.url: str = options["url"]
        self.remote_name: str = options.get("remote_name") or spec.model.id
        self._key_variable: str | None = options.get("api_key_env")
        self.timeout = float(options.get("timeout") or 600.0)

    # --- Runner interface ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None  # not ocrd's process

    @property
    def memory_bytes(self) -> int:
        return 0  # not on ocrd's host, or not ocrd's to count

    async def start(self, progress: ProgressCallback, on_exit: ExitCallback) -> None:
        headers = self._headers()
        progress(LoadProgress(stage="checking", message=f"asking {self.url}/models for {self.remote_name}"))
        timeout = httpx.Timeout(min(self.timeout, MODELS_TIMEOUT), connect=CONNECT_TIMEOUT)
        async with httpx.AsyncClient(headers=headers, timeout=timeout) as probe:
            try:
                response = await probe.get(f"{self.url}/models")
            except httpx.HTTPError as exc:
                raise ModelLoadFailed(self._unreachable(exc)) from None
        self._check_listing(response)
        log.info("%s: served by %s as %r", self.model_id, self.url, self.remote_name)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = AiohttpClient(
                # Rooted at the server, not at /v1: the proxy sends /v1/chat/completions to every
                # runner.
                base_url=self.url[: -len("/v1")],
                headers=self._headers(),
                timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
            )
        return self._client

    async def stop(self, grace: float) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- what is forwarded, and how failures read -------------------------------------------------

    def request_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request as the upstream gets it: the model under the server's own name, and
        without ocrd's ``ocrd`` extension field (a strict server refuses unknown fields)."""
        forwarded = {key: value for key, value in body.items() if key != "ocrd"}
        forwarded["model"] = self.remote_name
        return forwarded

    def describe(self) -> str:
        return f"the upstream server of {self.model_id} at {self.url}"

    def failure_hint(self) -> str:
        return "it may have restarted or failed; ocrd does not manage it"

    def timeout_note(self) -> str:
        return f" ({self.timeout:g}s, its timeout)"

    def unreachable(self, exc: httpx.ConnectError) -> OcrdError:
        return ModelNotReady(f"{self.describe()} is not reachable ({connect_reason(exc)})",
                             code="upstream_unreachable")

    # --- internals -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if not self._key_variable:
            return {}
        key = self._environ.get(self._key_variable)
        if not key:
            raise ModelLoadFailed(
                f"{self.model_id}: the upstream at {self.url} needs the API key in "
                f"${self._key_variable} (api_key_env), which is not set in ocrd's environment")
        return {"Authorization": f"Bearer {key}"}

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        where = f"{self.model_id}: the upstream server at {self.url}"
        if isinstance(exc, httpx.TimeoutException):
            return f"{where} did not answer GET /models in time"
        if isinstance(exc, httpx.ConnectError):
            # httpx keeps the OS's words: "Connection refused", "Name or service not known".
            return f"{where} cannot be reached ({connect_reason(exc)}); is it running, and is the URL right?"
        return f"{where} broke off GET /models ({connect_reason(exc)})"

    def _check_listing(self, response: httpx.Response) -> None:
        where = f"{self.model_id}: the upstream server at {self.url}"
        if response.status_code in (401, 403):
            key = (f"the key in ${self._key_variable}" if self._key_variable
                   else "no key (set api_key_env)")
            raise ModelLoadFailed(f"{where} refused ocrd's credentials (HTTP {response.status_code}, "
                                  f"{key})")
        if response.status_code != 200:
            raise ModelLoadFailed(f"{where} answered GET /models with HTTP {response.status_code}; "
                                  f"is it an OpenAI-compatible server, and does the URL end in /v1?")
        names = _listed_models(response.content)
        if names is None:
            raise ModelLoadFailed(f"{where} answered GET /models with something that is not "
                                  f"OpenAI's model list")
        if self.remote_name not in names:
            listed = ", ".join(sorted(names)) or "none"
            raise ModelLoadFailed(f"{where} does not serve {self.remote_name!r} (it lists: "
                                  f"{listed}); set served_model_name to one of them")


def _listed_models(content: bytes) -> set[str] | None:
    try:
        payload = json.loads(content)
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return {str(item["id"]) for item in data if isinstance(item, dict) and "id" in item}


def connect_reason(exc: BaseException) -> str:
    """The operating system's words under an httpx error ("Connection refused", "Name or service
    not known"): anyio wraps them in "All connection attempts failed"."""
    cause: BaseException | None = exc
    for _ in range(10):  # a short chain; bounded in case of a cycle
        if cause is None:
            break
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
            continue
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            # asyncio's strerror is "Connect call failed (...)"; errno says why. Resolver errors
            # (gaierror) have negative numbers and the right words already.
            if isinstance(cause.errno, int) and cause.errno > 0:
                return os.strerror(cause.errno)
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return str(exc).strip() or type(exc).__name__

