"""The rules for the remote (TCP) control plane's settings, checked whenever settings are built.

``ocrd check-config`` and ``ocrd serve`` both go through here, so a configuration that would
expose the control plane fails before anything is bound: plaintext TCP off loopback, TLS
without any way to tell callers apart off loopback, half a key pair, client-certificate rules
without a client CA. Each refusal says which keys to set (and that ``ocrd gen-certs`` makes the
files).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ocrd.addresses import is_loopback_host, split_host_port
from ocrd.config.tokens import HASH_PATTERN, Role, StoredToken
from ocrd.errors import ConfigError

TLS_HINT = (
    "set grpc.tls_cert and grpc.tls_key (make a CA, server and client certificate with "
    "'ocrd gen-certs DIR --host NAME'), or listen on 127.0.0.1"
)


class TokenSettings(BaseModel):
    """One ``[[grpc.tokens]]`` table (or ``[[tokens]]`` in ``grpc.tokens_file``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Who holds the token; shown in ocrd's log.")
    role: Role = Field(description="'read-only' (status, lists) or 'admin' (also load, delete...).")
    hash: str = Field(description="sha256:<hex> of the token, as printed by 'ocrd hash-token'.")

    @field_validator("hash")
    @classmethod
    def _is_a_hash(cls, value: str) -> str:
        if not HASH_PATTERN.match(value):
            raise PydanticCustomError(
                "token_hash",
                "store the token's hash ('sha256:' and 64 hex digits, as 'ocrd hash-token' "
                "prints it), never the token itself",
            )
        return value

    def stored(self) -> StoredToken:
        return StoredToken(self.name, self.role, self.hash)


def check_listen_addresses(addresses: list[str], data: dict[str, Any]) -> list[str]:
    """Validates ``grpc.listen`` against the other grpc keys already validated (``data``)."""
    for address in addresses:
        try:
            split_host_port(address)
        except ValueError as exc:
            raise PydanticCustomError("listen_address", str(exc)) from None
    _check_pairs(data)
    remote = [a for a in addresses if not is_loopback_host(split_host_port(a)[0])]
    if remote and not data.get("tls_cert"):
        raise PydanticCustomError(
            "plaintext_listener",
            f"refusing plaintext gRPC on {remote[0]}, which is not a loopback address (anyone "
            f"on the network could read and forge control calls); {TLS_HINT}",
        )
    authenticated = data.get("tokens") or data.get("tokens_file") or data.get("tls_client_ca")
    if remote and not authenticated:
        raise PydanticCustomError(
            "unauthenticated_listener",
            f"refusing to serve {remote[0]} without authentication (anyone who reaches it could "
            "administer ocrd); add tokens (grpc.tokens or grpc.tokens_file, see 'ocrd "
            "hash-token') or client certificates (grpc.tls_client_ca, see 'ocrd gen-certs')",
        )
    return addresses


def _check_pairs(data: dict[str, Any]) -> None:
    if bool(data.get("tls_cert")) != bool(data.get("tls_key")):
        raise PydanticCustomError(
            "tls_pair", "grpc.tls_cert and grpc.tls_key go together: set both or neither"
        )
    if data.get("tls_client_ca") and not data.get("tls_cert"):
        raise PydanticCustomError(
            "tls_client_ca", "grpc.tls_client_ca (client certificates) needs TLS: set "
            "grpc.tls_cert and grpc.tls_key too"
        )
    if data.get("client_certs") and not data.get("tls_client_ca"):
        raise PydanticCustomError(
            "client_certs", "grpc.client_certs needs grpc.tls_client_ca, the CA that signs "
            "the client certificates"
        )
    hashes = [token.hash for token in data.get("tokens") or []]
    if len(hashes) != len(set(hashes)):
        raise PydanticCustomError("token_hash", "grpc.tokens lists the same token hash twice")


_TOKEN_LIST = TypeAdapter(list[TokenSettings])


def load_tokens_file(path: Path) -> list[TokenSettings]:
    """The ``[[tokens]]`` tables of ``grpc.tokens_file``; ConfigError (one line) when unusable."""
    where = f"grpc.tokens_file: {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{where} is not readable by this user") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - {"tokens"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (only [[tokens]] tables)")
    try:
        return _TOKEN_LIST.validate_python(data.get("tokens", []))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{where}: tokens.{key}: {error['msg']}") from None
