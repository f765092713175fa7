"""``ApiKeyAuth``: a pure ASGI middleware that asks for ``Authorization: Bearer KEY`` (``http.api_keys``).

With no keys configured it lets everything through (the API then relies on binding to 127.0.0.1).
With keys, a request without a known key gets 401 in OpenAI's error shape (``code:
"invalid_api_key"``, ``WWW-Authenticate: Bearer``) before its body is read. Keys are stored as
SHA-256 hashes and looked up like the control plane's tokens (``ocrd.config.tokens``): the
presented key is hashed and compared with every stored hash in constant time. HTTP keys have no
roles: a key may use the whole HTTP API (including ``POST /models/load``); the control plane's
roles stay on gRPC.

Open without a key: ``GET /health`` and ``GET /health/ready`` (load balancers, ``systemctl``-style
and Kubernetes probes carry no secret, and they say only whether ocrd serves and which models are
loaded) and ``GET /openapi.json`` (the
API's description, no data). ``/metrics`` needs a key: its labels name models and its counters
show usage; Prometheus sends one with ``authorization: {credentials_file: ...}``.

The keys are read from the settings on every request, so a SIGHUP that changes them applies to
the next request.

Refusals are logged through a ``ThrottledLog``: anyone who can reach the port can send bad keys
at will, so the first few of each minute are logged with their peer and the rest as one count.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ocrd.config.tokens import Role, StoredToken, TokenTable
from ocrd.errors import Unauthenticated
from ocrd.http.state import AppState
from ocrd.log_throttle import ThrottledLog

log = logging.getLogger("ocrd.http")

OPEN_PATHS = frozenset({"/health", "/health/ready", "/openapi.json"})


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, state: AppState):
        self.app = app
        self.state = state
        self._refused = ThrottledLog(log, "refused HTTP requests")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.state.settings.http.api_keys
        if scope["type"] != "http" or not keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = bearer_key(scope)
        # Roles are the control plane's; every HTTP key may use the whole HTTP API.
        table = TokenTable(StoredToken(key.name, Role.ADMIN, key.hash) for key in keys)
        found = table.find(presented) if presented else None
        if found is not None:
            scope.setdefault("state", {})["api_key_name"] = found.name
            await self.app(scope, receive, send)
            return
        refusal = _refusal(presented)
        self._refused("%s %s from %s refused: %s", scope.get("method"), scope.get("path"),
                      _peer(scope), refusal.message)
        response = JSONResponse(refusal.to_openai(), status_code=refusal.http_status,
                                headers={"WWW-Authenticate": 'Bearer realm="ocrd"'})
        await response(scope, receive, send)


def bearer_key(scope: Scope) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header, or None (no header, another scheme)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
            return None
    return None


def _refusal(presented: str | None) -> Unauthenticated:
    # The key itself is never repeated: not in the answer, not in the log.
    if presented is None:
        return Unauthenticated(
            "this ocrd needs an API key: send it as 'Authorization: Bearer KEY' (OpenAI clients: "
            "api_key=KEY); the administrator makes keys with 'ocrd hash-token --http'"
        )
    return Unauthenticated("the API key is not valid for this ocrd (unknown or revoked)")


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown peer"
