"""One URL per model for the router, and the way back (``ClusterPaths``).

vllm-router (0.1.17, ``--enable-igw``) keys its workers by URL. Registering a second model at a
URL it knows replaces that worker's model in its list, but leaves the first model's routing entry
behind, where ``DELETE /workers/{url}`` no longer reaches it: a node withdrawn at shutdown would
still get requests for its first model (measured; docs/scale-out.md). So each name this node
serves is registered at a URL of its own, ``ADVERTISE/cluster/NAME``, ``org/name`` written
``org--name`` (model ids never contain ``--``, so no two names share a URL).

The router keeps a worker URL's path and appends the API's: requests arrive as
``/cluster/builtin--ppocr/v1/chat/completions``, health checks as ``/cluster/builtin--ppocr/health``.
``ClusterPaths``, the HTTP app's outermost middleware, takes the prefix off again, so the request
is served exactly as if it had been sent to the root: the body's ``model`` decides, as always, and
keys, limits and errors are the same. The prefix routes nothing by itself.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/cluster/"
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_WILDCARDS = {"", "0.0.0.0", "::"}


def model_path(name: str) -> str:
    """``/cluster/NAME`` for a model id or alias (``builtin/ppocr``: ``/cluster/builtin--ppocr``)."""
    return PREFIX + name.replace("/", "--")


def model_url(advertise_url: str, name: str) -> str:
    """The worker URL ``name`` is registered at: this node's advertised URL and its own path."""
    return advertise_url + model_path(name)


def default_advertise_url(listener_url: str) -> str:
    """``cluster.advertise_url`` left empty: the HTTP listener's URL as bound (``http://HOST:PORT``),
    a wildcard host replaced by this machine's host name (0.0.0.0 is no address to connect to)."""
    parts = urlsplit(listener_url)
    host = parts.hostname or ""
    if host in _WILDCARDS:
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port}"


class ClusterPaths:
    """Serves ``/cluster/NAME/REST`` as ``/REST`` (see the module doc); any other path, and a
    ``NAME`` that no model could have, goes on untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            scope = _without_prefix(scope)
        await self.app(scope, receive, send)


def _without_prefix(scope: Scope) -> Scope:
    name, _, rest = scope["path"][len(PREFIX):].partition("/")
    if not _NAME.fullmatch(name):
        return scope  # answered like any unknown path: 404
    path = "/" + rest
    # raw_path is the path as sent (percent-encoded); the name's characters need no encoding, so
    # its prefix is the same bytes unless a client encoded them anyway.
    raw = scope.get("raw_path") or b""
    sent_prefix = (PREFIX + name).encode()
    if raw.startswith(sent_prefix):
        raw_path = raw[len(sent_prefix):] or b"/"
    else:
        raw_path = quote(path).encode()
    return {**scope, "path": path, "raw_path": raw_path}
