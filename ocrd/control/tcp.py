"""The control plane's TCP listener(s) for remote ``ocrctl``: TLS, client certificates, tokens.

A second ``grpc.aio`` server next to the Unix socket's, serving the same servicer, because only
TCP callers go through :class:`ocrd.control.auth.AuthInterceptor` (the socket's permissions are
its authentication). The settings were already checked (``ocrd.config.remote``):
plaintext only on loopback, some authentication off loopback. Here the files are read and
checked, so a wrong path or a key that does not match the certificate fails start-up with one
line instead of every handshake later.

``grpc.so_reuseport`` is off: gRPC turns it on by default, which would let a second daemon bind
the same port and silently take half the connections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc

from ocrd.addresses import is_loopback_host, split_host_port
from ocrd.config.remote import TLS_HINT, load_tokens_file
from ocrd.config.settings import Settings
from ocrd.config.tokens import TokenTable
from ocrd.control.auth import Authenticator, AuthInterceptor
from ocrd.control.errors import ErrorInterceptor
from ocrd.control.reflection import enable_reflection
from ocrd.control.v1 import control_pb2_grpc
from ocrd.errors import ConfigError

log = logging.getLogger("ocrd.control")

SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


@dataclass
class TcpListener:
    server: grpc.aio.Server
    addresses: list[str]
    authenticator: Authenticator

    def apply_settings(self, settings: Settings) -> None:
        """SIGHUP: new tokens and certificate roles apply to the next call (a revoked token is
        refused at once); addresses and TLS files need a restart."""
        fresh = build_authenticator(settings)
        self.authenticator.tokens = fresh.tokens
        self.authenticator.client_certs = fresh.client_certs

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)


def build_authenticator(settings: Settings) -> Authenticator:
    grpc_settings = settings.grpc
    entries = list(grpc_settings.tokens)
    if grpc_settings.tokens_file is not None:
        entries += load_tokens_file(grpc_settings.tokens_file)
    hashes = [entry.hash for entry in entries]
    if len(hashes) != len(set(hashes)):
        raise ConfigError("grpc.tokens and grpc.tokens_file list the same token hash twice")
    return Authenticator(
        TokenTable(entry.stored() for entry in entries),
        mtls=grpc_settings.tls_client_ca is not None,
        client_certs=grpc_settings.client_certs,
    )


async def start_tcp_listener(
    settings: Settings,
    servicer: control_pb2_grpc.ControlServicer,
    health_servicer: health.aio.HealthServicer,
    service_names: list[str],
) -> TcpListener | None:
    """Binds every ``grpc.listen`` address and starts serving; None when there is none."""
    grpc_settings = settings.grpc
    if not grpc_settings.listen:
        return None
    authenticator = build_authenticator(settings)
    _check_authenticated(grpc_settings.listen, authenticator)
    credentials = server_credentials(settings)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(authenticator), ErrorInterceptor()], options=SERVER_OPTIONS
    )
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, service_names)
    try:
        addresses = [_bind(server, address, credentials) for address in grpc_settings.listen]
    except ConfigError:
        await server.stop(None)  # releases the addresses bound before the one that failed
        raise
    await server.start()
    _log_listening(settings, addresses, authenticator)
    return TcpListener(server, addresses, authenticator)


def _check_authenticated(listen: list[str], authenticator: Authenticator) -> None:
    # The settings check this too, but a tokens_file may turn out to hold no token.
    if authenticator.mtls or authenticator.tokens:
        return
    remote = [a for a in listen if not is_loopback_host(split_host_port(a)[0])]
    if remote:
        raise ConfigError(
            f"grpc.listen: refusing to serve {remote[0]} without authentication: grpc.tokens_file "
            "holds no token; add [[tokens]] to it (see 'ocrd hash-token') or set grpc.tls_client_ca"
        )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from grpc.tls_* (None: plaintext, which the settings allow on loopback)."""
    grpc_settings = settings.grpc
    if grpc_settings.tls_cert is None or grpc_settings.tls_key is None:
        return None
    # Here, not at the top: the cryptography package is loaded only by daemons that serve TLS.
    from ocrd.cli.certs import check_key_pair

    cert = _read(grpc_settings.tls_cert, "grpc.tls_cert")
    key = _read(grpc_settings.tls_key, "grpc.tls_key")
    check_key_pair(cert, key, cert_key="grpc.tls_cert", key_key="grpc.tls_key")
    client_ca = None
    if grpc_settings.tls_client_ca is not None:
        client_ca = _read(grpc_settings.tls_client_ca, "grpc.tls_client_ca")
        if b"-----BEGIN CERTIFICATE-----" not in client_ca:
            raise ConfigError(f"grpc.tls_client_ca: {grpc_settings.tls_client_ca} holds no PEM certificate")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path} does not exist (make one with 'ocrd gen-certs DIR')") from None
    except PermissionError:
        raise ConfigError(f"{key}: {path} is not readable by this user (the daemon's user "
                          "must be able to read it; keys belong to that user, mode 0600)") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _bind(server: grpc.aio.Server, address: str,
          credentials: grpc.ServerCredentials | None) -> str:
    host, _ = split_host_port(address)
    if credentials is None and not is_loopback_host(host):
        # The settings already refuse this; a listener is the last place to be sure.
        raise ConfigError(f"grpc.listen: refusing plaintext gRPC on {address}; {TLS_HINT}")
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(
            f"grpc.listen: cannot listen on {address} (in use, or not an address of this host); "
            "choose another port or address"
        )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _log_listening(settings: Settings, addresses: list[str], authenticator: Authenticator) -> None:
    grpc_settings = settings.grpc
    parts = ["TLS" if grpc_settings.tls_cert else "plaintext"]
    if authenticator.mtls:
        parts.append("client certificates required")
    if authenticator.tokens:
        parts.append(f"{len(authenticator.tokens)} token(s)")
    log.info("control plane listening on %s (%s)", ", ".join(addresses), ", ".join(parts))
    if not authenticator.mtls and not authenticator.tokens:
        log.warning("control plane on %s has no authentication: every local user can "
                    "administer ocrd through it (set grpc.tokens to require a token)",
                    ", ".join(addresses))
