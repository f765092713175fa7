"""Bearer tokens of the remote control plane: roles, hashing, generation and lookup.

ocrd stores only ``sha256:<hex>`` hashes of tokens (in ``grpc.tokens`` or ``grpc.tokens_file``),
so a leaked config file does not let anyone in. A plain, unsalted SHA-256 is enough because the
tokens themselves are 256-bit random strings (``ocrd hash-token --generate``) and
``ocrd hash-token`` refuses short ones: there is nothing to brute-force, and a slow password
hash (scrypt) would only add tens of milliseconds to every call. A presented token is hashed and
compared with every stored hash with ``hmac.compare_digest``, without stopping at the first
match, so the time a lookup takes says nothing about the stored hashes.

Kept free of gRPC so that the configuration and the CLI can import it cheaply.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

HASH_PREFIX = "sha256:"
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}\Z")  # \Z: $ also matches before a final newline
MIN_TOKEN_LENGTH = 32  # characters; a generated token has 43 (32 random bytes, base64url)


class Role(StrEnum):
    """What a caller may do: read-only sees state, admin also changes it."""

    READ_ONLY = "read-only"
    ADMIN = "admin"

    def allows(self, required: Role) -> bool:
        return _RANK[self] >= _RANK[required]


_RANK = {Role.READ_ONLY: 0, Role.ADMIN: 1}


def lower_role(first: Role, second: Role) -> Role:
    return first if _RANK[first] <= _RANK[second] else second


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of the token's UTF-8 bytes (leading/trailing whitespace removed)."""
    return HASH_PREFIX + hashlib.sha256(token.strip().encode("utf-8")).hexdigest()


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def check_token_strength(token: str) -> None:
    """ValueError for a token too short to be stored with a fast hash."""
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the token has {len(token.strip())} characters; use at least {MIN_TOKEN_LENGTH} random "
            "ones ('ocrd hash-token --generate FILE' makes one)"
        )


@dataclass(frozen=True)
class StoredToken:
    """One configured token: a name for the logs, its role, and the hash of the secret."""

    name: str
    role: Role
    hash: str


class TokenTable:
    """The configured tokens; finds the one a caller presented."""

    def __init__(self, tokens: Iterable[StoredToken]):
        self._tokens = list(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def find(self, presented: str) -> StoredToken | None:
        """The stored token whose hash equals the presented token's hash, else None."""
        digest = hash_token(presented).encode("ascii")
        found = None
        for token in self._tokens:  # no early exit: every lookup compares against every hash
            if hmac.compare_digest(digest, token.hash.encode("ascii")):
                found = token
        return found
