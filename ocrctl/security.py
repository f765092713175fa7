"""How ocrctl reaches a remote daemon: TLS files, client certificate, token — and what a refused
handshake or token means, in one line.

The token comes from ``--token-file`` or ``$OCRD_TOKEN`` and is only ever put in the
``authorization`` metadata of calls over TCP; no message here contains it. ocrctl refuses to
send it in plaintext to anything but a loopback address, mirroring the daemon, which refuses
plaintext listeners off loopback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ocrd.addresses import is_loopback_host, tcp_host

ENV_TOKEN = "OCRD_TOKEN"
TOKEN_HINT = f"set {ENV_TOKEN} or pass --token-file FILE"


class SecurityError(Exception):
    """A bad TLS or token option, explained in one line."""


@dataclass(frozen=True)
class Security:
    tls_ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)  # never in a repr, a log or a message
    token_source: str = ""

    @classmethod
    def from_options(cls, *, tls_ca: str | None = None, cert: str | None = None,
                     key: str | None = None, server_name: str | None = None,
                     token_file: str | None = None,
                     environ: dict[str, str] | None = None) -> Security:
        environ = dict(os.environ if environ is None else environ)
        if bool(cert) != bool(key):
            raise SecurityError("--cert and --key go together: pass both (client.pem and client-key.pem)")
        if cert and not tls_ca:
            raise SecurityError("--cert/--key need --tls-ca, the CA that signed ocrd's certificate")
        token, source = None, ""
        if token_file:
            token, source = _read_token_file(Path(token_file)), f"--token-file {token_file}"
        elif environ.get(ENV_TOKEN, "").strip():
            token, source = environ[ENV_TOKEN].strip(), f"${ENV_TOKEN}"
        return cls(Path(tls_ca) if tls_ca else None, Path(cert) if cert else None,
                   Path(key) if key else None, server_name, token, source)

    def metadata(self, target: str) -> list[tuple[str, str]] | None:
        """The token as call metadata, only for TCP targets (the Unix socket needs none)."""
        if self.token and tcp_host(target) is not None:
            return [("authorization", f"Bearer {self.token}")]
        return None


def open_channel(target: str, security: Security) -> grpc.Channel:
    host = tcp_host(target)
    if security.tls_ca is None:
        if security.token and host is not None and not is_loopback_host(host):
            raise SecurityError(
                f"refusing to send the token in plaintext to {target}: pass --tls-ca CA.pem "
                "(ocrd serves TLS off loopback)"
            )
        return grpc.insecure_channel(target)
    if host is None:
        raise SecurityError("--tls-ca is for host:port addresses; the Unix socket needs no TLS")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(security.tls_ca, "--tls-ca"),
        private_key=_read(security.key, "--key") if security.key else None,
        certificate_chain=_read(security.cert, "--cert") if security.cert else None,
    )
    options = [("grpc.ssl_target_name_override", security.server_name)] if security.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def describe_auth_error(code: grpc.StatusCode | None, details: str, target: str,
                        security: Security) -> str | None:
    """One line for UNAUTHENTICATED from the daemon; None for other codes.

    PERMISSION_DENIED is left to the daemon's own message, which names the caller, its role
    and the call ("token 'ci' is read-only and may not call LoadModel ..."): the same code
    also means a refusal by the Hub or a registry, where "the daemon refused" would mislead.
    """
    if code is not grpc.StatusCode.UNAUTHENTICATED:
        return None
    if security.token:
        return (f"the daemon at {target} refused the token from {security.token_source} "
                f"(UNAUTHENTICATED: {details}); {TOKEN_HINT} with a token it knows")
    return f"the daemon at {target} needs a token (UNAUTHENTICATED): {TOKEN_HINT}"


def describe_tcp_failure(details: str, target: str, security: Security) -> str:
    """One line for a TCP connection or TLS handshake that failed (gRPC says UNAVAILABLE)."""
    host = tcp_host(target) or target
    if "Connection refused" in details:
        return (f"nothing listens at {target}: is ocrd running there with grpc.listen set "
                "to this port?")
    if "DNS resolution failed" in details:
        return f"cannot resolve {host}: check the name in --address"
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (f"the certificate of ocrd at {target} is not signed by --tls-ca {security.tls_ca}: "
                "use the ca.pem made together with the daemon's certificate")
    if "Hostname Verification" in details or "Peer name" in details:
        return (f"the certificate of ocrd at {target} is not valid for "
                f"{security.server_name or host}: remake it with 'ocrd gen-certs DIR --host "
                f"{security.server_name or host}', or pass --tls-server-name with a name it has")
    if "WRONG_VERSION_NUMBER" in details:
        return (f"ocrd at {target} does not speak TLS: drop --tls-ca (plaintext is allowed only "
                "on loopback addresses)")
    if security.tls_ca is None:
        return (f"ocrd at {target} closed the connection: it probably serves TLS; pass --tls-ca "
                "CA.pem (and --cert/--key if it requires client certificates)")
    if security.cert is None:
        return (f"ocrd at {target} ended the TLS handshake: it requires a client certificate; "
                "pass --cert client.pem --key client-key.pem (made by 'ocrd gen-certs')")
    return (f"ocrd at {target} rejected the client certificate {security.cert}: it is not "
            "signed by the CA in the daemon's grpc.tls_client_ca, or not a client certificate")


def _read_token_file(path: Path) -> str:
    token = _read(path, "--token-file").decode("utf-8", "replace").strip()
    if not token:
        raise SecurityError(f"--token-file {path} is empty")
    return token


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SecurityError(f"{option} {path} does not exist") from None
    except PermissionError:
        raise SecurityError(f"{option} {path} is not readable by this user") from None
    except OSError as exc:
        raise SecurityError(f"{option} {path}: {exc.strerror}") from None
