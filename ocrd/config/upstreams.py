"""Static upstreams: OpenAI-compatible servers ocrd routes to but does not run (``[[upstreams]]``).

An upstream is any server that speaks OpenAI's chat completions API — a vLLM started by Docker
Compose, a SGLang, a remote endpoint. ocrd serves its model through its own HTTP API like any other
(one model list, one set of limits, metrics), on the ``upstream`` engine: loading it checks that
the server answers ``/models`` and lists the model, unloading forgets it, and nothing is started,
stopped or measured (no memory, no device, never evicted for memory).

This module holds the settings of one upstream and turns the configured list into catalog entries.
An upstream whose ``model`` is an id or alias of the catalog *takes that model over*: the entry
keeps the catalog's id, aliases, presets and sampling (so ``dots.ocr:layout`` works through it) and
runs on the upstream instead of a runner of ocrd's. Any other name is a model of its own, with no
presets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.units import parse_duration
from ocrd.errors import ModelNotFound
from ocrd.model_ids import is_model_id

ENGINE = "upstream"
# Environment variable names as POSIX shells accept them.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: $ also matches before a final newline


class UpstreamSettings(BaseModel):
    """One ``[[upstreams]]`` table."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ..., min_length=1,
        description="The model id clients send. A catalog id or alias takes that catalog model over "
        "(its aliases and presets are kept); any other name is served as it is.",
    )
    url: str = Field(
        ...,
        description="The server's OpenAI base URL, ending in /v1 (what a client's base_url would "
        "be), e.g. http://vllm-dots:8000/v1; http or https.",
    )
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable (of ocrd's process) that holds the key ocrd "
        "sends as 'Authorization: Bearer ...'; unset: no key.",
    )
    timeout: float | None = Field(
        None, gt=0,
        description="Longest the server may take to answer one request, in seconds (or '30s', "
        "'5m'); unset: http.request_timeout.",
    )
    served_model_name: str | None = Field(
        None, min_length=1,
        description="The name the server knows the model by, when it differs from `model`: ocrd "
        "puts it into the requests it forwards and looks for it in the server's /models.",
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if value != value.strip() or ":" in value:
            # ":" separates a model from its preset in requests ("dots.ocr:layout").
            raise ValueError("a model id has no surrounding spaces and no ':'")
        if not is_model_id(value):
            # Clients may only send names of this shape (ocrd.model_ids): any other is unreachable.
            raise ValueError("a model id is NAME or ORG/NAME: ASCII letters, digits, '-', '_', "
                             "'.'; no '..' or '--'")
        return value

    @field_validator("url")
    @classmethod
    def _openai_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://vllm-dots:8000/v1")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        if not parts.path.rstrip("/").endswith("/v1"):
            raise ValueError("must be the OpenAI base URL, ending in /v1 (e.g. http://host:8000/v1)")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must name an environment variable, e.g. DOTS_API_KEY (the key itself "
                             "never goes into the file)")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def server_root(self) -> str:
        """The URL without its trailing ``/v1``: runners' clients are rooted there (ocrd sends
        ``/v1/chat/completions`` to every runner)."""
        return self.url[: -len("/v1")]

    @property
    def remote_name(self) -> str:
        return self.served_model_name or self.model


def check_upstreams(upstreams: list[UpstreamSettings]) -> None:
    """ValueError when two upstreams claim one model: the same id, or two names of one catalog
    model (``dots.ocr`` and ``rednote-hilab/dots.ocr``)."""
    seen: set[str] = set()
    for upstream in upstreams:
        if upstream.model in seen:
            raise ValueError(f"model {upstream.model!r} is configured twice")
        seen.add(upstream.model)
    if upstreams:
        upstream_entries(upstreams, Catalog.load_default())


def upstream_entries(upstreams: Iterable[UpstreamSettings], catalog: Catalog) -> list[CatalogEntry]:
    """The catalog entries of the upstream models: catalog models they take over (by id or
    alias), then models of their own. ValueError when two upstreams name one catalog model
    (e.g. ``dots.ocr`` and ``rednote-hilab/dots.ocr``) or a model of one is an alias of another's."""
    entries: dict[str, CatalogEntry] = {}
    names: dict[str, str] = {}
    for upstream in upstreams:
        entry = _entry(upstream, catalog)
        for name in (entry.id, *entry.aliases):
            if name in names:
                raise ValueError(f"upstreams {names[name]!r} and {upstream.model!r} both name the "
                                 f"model {entry.id!r}; keep one")
            names[name] = upstream.model
        entries[entry.id] = entry
    return list(entries.values())


def _entry(upstream: UpstreamSettings, catalog: Catalog) -> CatalogEntry:
    options: dict[str, Any] = {
        "url": upstream.url,
        "remote_name": upstream.remote_name,
        "api_key_env": upstream.api_key_env,
        "timeout": upstream.timeout,
    }
    served = f"served by the upstream server at {upstream.url}"
    try:
        known = catalog.resolve(upstream.model)
    except ModelNotFound:
        return CatalogEntry(id=upstream.model, description=f"{upstream.model}: {served}",
                            engines=(ENGINE,), engine_options={ENGINE: options})
    # The catalog's vLLM prompt wrapping applies: upstreams of catalog models are vLLM servers
    # (or speak the same chat templates), which need e.g. dots.ocr's image tokens before a preset.
    vllm = known.engine_options.get("vllm", {})
    wrap: dict[str, Any] = {key: vllm[key] for key in ("prompt_prefix", "prompt_suffix") if key in vllm}
    return replace(known, engines=(ENGINE,), engine_options={ENGINE: {**options, **wrap}},
                   description=f"{known.description} ({served})",
                   unsupported={}, requires_binary=None)


def upstream_options(entry: CatalogEntry) -> dict[str, Any]:
    """What ``upstream_entries`` recorded about the entry's server (url, remote_name, ...)."""
    return dict(entry.engine_options.get(ENGINE, {}))
