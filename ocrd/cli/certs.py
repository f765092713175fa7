"""``ocrd gen-certs``: a private CA, a server certificate and a client certificate for a first
set-up of the remote control plane (TLS, optionally mTLS), made with the ``cryptography`` package.

Keys are ECDSA P-256: small, fast to make, and accepted by gRPC's TLS stack (BoringSSL) on both
sides. Key files are created with mode 0600 and nothing is ever overwritten without ``force``, so
re-running the command cannot silently invalidate certificates already handed out. The server
certificate always names ``localhost``, ``127.0.0.1`` and ``::1`` next to the given hosts, so
``ocrctl`` on the server itself can verify it too.

The daemon also uses :func:`check_key_pair` at start-up: a key that does not belong to the
certificate otherwise shows up only as a failed handshake on every client.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ocrd.cli.cert_defaults import ALWAYS_NAMED, CA_DAYS, DEFAULT_CLIENT_NAME, DEFAULT_DAYS
from ocrd.errors import ConfigError, InvalidRequest

# A DNS name as it may appear in a certificate: labels of letters, digits and hyphens.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# \Z, not $: $ also matches before a final newline.
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\Z")


@dataclass(frozen=True)
class CertificateSet:
    """Where gen-certs put each file (all inside one directory)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def files(self) -> list[Path]:
        return [self.ca_cert, self.ca_key, self.server_cert, self.server_key,
                self.client_cert, self.client_key]


def generate(
    directory: Path,
    hosts: Iterable[str],
    *,
    client_name: str = DEFAULT_CLIENT_NAME,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> CertificateSet:
    """Makes the CA, server and client certificates in ``directory``.

    InvalidRequest (one line) for a bad host name or existing files without ``force``.
    """
    names = subject_alternative_names(hosts)
    if days < 1:
        raise InvalidRequest("--days must be at least 1")
    if not client_name.strip():
        raise InvalidRequest("--client-name must not be empty")
    files = CertificateSet(directory.absolute())
    existing = [path for path in files.files() if path.exists()]
    if existing and not force:
        raise InvalidRequest(
            f"{existing[0]} already exists; certificates made from it may be in use. Choose "
            "another directory or pass --force to replace every file"
        )
    directory.mkdir(parents=True, exist_ok=True)
    now = now or datetime.datetime.now(datetime.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf_certificate(
        ca_cert, ca_key, server_key.public_key(), "ocrd", now, days,
        usage=ExtendedKeyUsageOID.SERVER_AUTH, names=names,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _leaf_certificate(
        ca_cert, ca_key, client_key.public_key(), client_name, now, days,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH, names=None,
    )
    for path, cert in ((files.ca_cert, ca_cert), (files.server_cert, server_cert),
                       (files.client_cert, client_cert)):
        _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for path, key in ((files.ca_key, ca_key), (files.server_key, server_key),
                      (files.client_key, client_key)):
        _write(path, _key_pem(key), 0o600)
    return files


def subject_alternative_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """The given hosts (IP addresses or DNS names) plus localhost and the loopback addresses."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [*hosts, *ALWAYS_NAMED]:
        host = host.strip().lower()
        if host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.match(host):
            raise InvalidRequest(
                f"--host {host!r} is neither an IP address nor a DNS name (letters, digits, "
                "hyphens and dots)"
            )
        names.append(x509.DNSName(host))
    return names


def check_key_pair(cert_pem: bytes, key_pem: bytes, *, cert_key: str, key_key: str) -> None:
    """ConfigError unless ``key_pem`` is the private key of the (first) certificate in
    ``cert_pem``; ``cert_key``/``key_key`` name the settings the files came from."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_key}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{key_key}: not an unencrypted PEM private key (ocrd cannot ask for a passphrase)"
        ) from None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(f"{key_key} is not the private key of the certificate in {cert_key}")


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocrd control-plane CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    now: datetime.datetime,
    days: int,
    *,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName] | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode (O_EXCL after unlinking an old file): a key is never readable
    # by others, not even for a moment, whatever the umask.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # the umask may have taken bits off a certificate's 0644
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
