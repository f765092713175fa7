"""The connection to ocrd's control plane, and what its failures mean to a person.

Only the generated stubs and ``ocrd.addresses`` (which the daemon binds with, so both
always agree on the default socket) come from ocrd: ocrctl must stay a thin client that starts
fast and works against a daemon of another version.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from ocrctl.security import Security, describe_auth_error, describe_tcp_failure, open_channel
from ocrd.addresses import default_address, tcp_host, to_grpc_target
from ocrd.control.v1 import control_pb2_grpc

Answer = TypeVar("Answer", bound=Message)

# Unary calls answer in milliseconds; a daemon that takes longer than this is wedged.
DEFAULT_UNARY_TIMEOUT = 30.0
START_HINT = "start it with 'ocrd serve' or 'systemctl start ocrd'"
# grpc-core's wording for "the connection itself failed" (as opposed to a status from ocrd).
_CONNECT_FAILED = "failed to connect to all addresses"


class CommandError(Exception):
    """A failure ocrctl explains in one line (``ocrctl: <message>``, exit 1)."""


class Client:
    """A sync channel to the daemon; streams have no deadline unless --timeout is given.

    ``security``: TLS files and token for a remote daemon (ocrctl.security); SecurityError when
    they are unusable.
    """

    def __init__(self, address: str | None, timeout: float | None = None,
                 security: Security | None = None):
        self.target = to_grpc_target(address) if address else default_address()
        self.timeout = timeout
        self.security = security or Security()
        self._metadata = self.security.metadata(self.target)
        self._channel = open_channel(self.target, self.security)
        self.stub = control_pb2_grpc.ControlStub(self._channel)

    def call(self, method: str, request: Message, answer: type[Answer]) -> Answer:
        """A unary RPC by name and the message it answers with, e.g.
        ``call("GetStatus", GetStatusRequest(), GetStatusResponse)``."""
        timeout = self.timeout if self.timeout is not None else DEFAULT_UNARY_TIMEOUT
        response = getattr(self.stub, method)(request, timeout=timeout, metadata=self._metadata)
        return _expect(response, answer)

    def stream(self, method: str, request: Message, step: type[Answer]) -> Iterator[Answer]:
        """A server-streaming RPC's messages; the stream is cancelled when the reader stops early
        (Ctrl-C, an exception, a break)."""
        call = getattr(self.stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        try:
            for message in call:
                yield _expect(message, step)
        finally:
            call.cancel()

    def upload(self, method: str, requests: Iterable[Message], answer: type[Answer]) -> Answer:
        """A client-streaming RPC (an upload): ``requests`` are sent as they are produced; no
        deadline unless --timeout is given (a large file takes what it takes)."""
        response = getattr(self.stub, method)(iter(requests), timeout=self.timeout,
                                              metadata=self._metadata)
        return _expect(response, answer)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def describe_rpc_error(error: grpc.RpcError, target: str, security: Security | None = None) -> str:
    """One line for an RPC that failed: connection problems in words, else ocrd's own message."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    security = security or Security()
    refused = describe_auth_error(code, details, target, security)
    if refused is not None:
        return refused
    if code is grpc.StatusCode.UNAVAILABLE and details.startswith(_CONNECT_FAILED):
        if tcp_host(target) is not None:
            return describe_tcp_failure(details, target, security)
        if "Permission denied" in details:
            return permission_message(target)
        return f"ocrd is not running at {target} ({START_HINT})"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
        return f"ocrd at {target} did not answer in time (--timeout)"
    return details


def permission_message(target: str) -> str:
    path = target.removeprefix("unix://").removeprefix("unix:")
    group = _group_of(path)
    if group in (None, "root"):
        group = "ocrd"  # the packaged default (grpc.socket_group); joining root is no advice
    return (
        f"permission denied on {path}: join group {group} "
        f"(sudo usermod -aG {group} $USER, then log in again) or use sudo"
    )


def _group_of(path: str) -> str | None:
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return None


def _expect(message: object, kind: type[Answer]) -> Answer:
    if not isinstance(message, kind):  # a daemon of another protocol version
        raise CommandError(f"the daemon answered with {type(message).__name__}, not {kind.__name__}; "
                           "are ocrctl and ocrd the same version?")
    return message
