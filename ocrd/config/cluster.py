"""The ``[cluster]`` section of the settings (``ocrd.config.settings``): this node behind a router.

Read by ``ocrd.cluster`` (registration with vllm-router) each round, so a SIGHUP that changes a key
applies at the next round; docs/scale-out.md explains the set-up.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ocrd.config.units import Duration


class ClusterSettings(BaseModel):
    """This node behind an OpenAI-aware router (docs/scale-out.md): with router_url set, ocrd
    registers every model it can serve (what GET /v1/models lists, ids and aliases) with a
    vllm-router started with --enable-igw, keeps them registered and withdraws them at shutdown."""

    model_config = ConfigDict(extra="forbid")

    router_url: str = Field(
        "", description="Base URL of the vllm-router (started with --enable-igw) whose worker API "
        "(POST, GET and DELETE /workers) this node registers its models with, e.g. "
        "http://router:30000. Empty: no registration.")
    advertise_url: str = Field(
        "", description="The URL the router reaches this node's HTTP API at, e.g. "
        "http://10.0.0.5:8000 (in Kubernetes the pod's IP from the downward API). Empty: "
        "derived from http.host and the port bound, a wildcard host (0.0.0.0, ::) replaced by "
        "this machine's host name; right when the router runs on this machine, usually wrong in "
        "a cluster (127.0.0.1 is the router's own loopback, a container's host name is unknown "
        "to the others). Each model is registered as ADVERTISE_URL/cluster/NAME.")
    interval: Duration = Field(
        10.0, gt=0, description="How often the router's list of workers is compared with what "
        "this node serves: what is missing is registered (a router that restarted forgets every "
        "node), what this node no longer serves is withdrawn.")
    timeout: Duration = Field(
        3.0, gt=0, description="Longest one call to the router may take; the withdrawal at "
        "shutdown waits no longer, so a router that is down never holds up a stop.")

    @field_validator("router_url", "advertise_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)


def check_http_url(value: str) -> str:
    """``value`` without a trailing ``/`` if it is empty or an http(s) URL with a host (a path is
    allowed: a router or node behind a path-routing proxy); ValueError saying what one looks
    like otherwise (the caller's error names the key and the value)."""
    if not value:
        return value
    hint = "an http(s) URL such as http://router:30000 (scheme, host, optional port and path)"
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ValueError(f"must be {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"must be {hint}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"must be {hint}, without a query, fragment or user name")
    return value.rstrip("/")
