"""Failed TLS handshakes on the control plane's TCP listener leave nothing in the daemon's log.

gRPC's C core logs each one itself, past Python's logging ("I1206 ... ssl_transport_security.cc:
2563] Handshake failed with error SSL_ERROR_SSL: ..."); ``ocrd serve`` keeps the core to its errors
(``GRPC_VERBOSITY=ERROR``) unless the user asks for more. A real ``ocrd serve`` with TLS on a
loopback port (certificates from ``ocrd gen-certs``' code), clients that fail the handshake in
three ways (plaintext gRPC, an HTTP/1.1 request, bytes that are no protocol), then a proper TLS
client that must still be served.
"""

from __future__ import annotations

import socket

import grpc
import pytest

from ocrd.cli import certs
from ocrd.config.tokens import generate_token, hash_token
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from tests.support.daemon import free_port, running_daemon, wait_until

TOKEN = generate_token()
CORE_HANDSHAKE_LOG = ("ssl_transport_security", "SSL_ERROR_SSL", "Handshake failed")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> certs.CertificateSet:
    return certs.generate(tmp_path_factory.mktemp("tls") / "ocrd", [])


@pytest.fixture
def tls_config(tls: certs.CertificateSet) -> dict:
    return {"grpc": {"listen": [f"127.0.0.1:{free_port()}"], "tls_cert": tls.server_cert,
                     "tls_key": tls.server_key,
                     "tokens": [{"name": "alice", "role": "admin", "hash": hash_token(TOKEN)}]}}


def fail_handshakes(address: str) -> None:
    host, port = address.rsplit(":", 1)
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            control_pb2_grpc.ControlStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    for garbage in (b"GET / HTTP/1.1\r\nHost: ocrd\r\n\r\n", b"\x00no protocol at all\xff" * 16):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(garbage)
            while raw.recv(4096):  # the server ends the connection (after an alert, maybe)
                pass


def get_status_over_tls(address: str, tls: certs.CertificateSet) -> pb.GetStatusResponse:
    credentials = grpc.ssl_channel_credentials(tls.ca_cert.read_bytes())
    with grpc.secure_channel(address, credentials) as channel:
        return control_pb2_grpc.ControlStub(channel).GetStatus(
            pb.GetStatusRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30)


def core_handshake_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(mark in line for mark in CORE_HANDSHAKE_LOG)]


def test_failed_handshakes_leave_no_grpc_core_lines_and_tls_clients_are_still_served(
        tls, tls_config, monkeypatch):
    # The variable as a user's shell would have it: unset (ocrctl, imported by other tests in
    # this process, sets it for itself).
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    address = tls_config["grpc"]["listen"][0]
    with running_daemon(tls_config) as daemon:
        fail_handshakes(address)
        assert get_status_over_tls(address, tls).pid == daemon.pid
        assert daemon.stop() == 0  # every line it would write is written
        log = daemon.stderr()
    assert core_handshake_lines(log) == []
    assert "control plane listening on " + address + " (TLS, 1 token(s))" in log


def test_grpc_verbosity_set_by_the_user_brings_the_cores_handshake_lines_back(
        tls, tls_config, monkeypatch):
    # docs/security.md: how to see why a client cannot connect. Also shows that the handshakes
    # above do reach the core, which would log them.
    monkeypatch.setenv("GRPC_VERBOSITY", "info")
    address = tls_config["grpc"]["listen"][0]
    with running_daemon(tls_config) as daemon:
        fail_handshakes(address)
        wait_until(lambda: len(core_handshake_lines(daemon.stderr())) >= 3, timeout=10,
                   message="gRPC's own line for each failed handshake")
        assert get_status_over_tls(address, tls).pid == daemon.pid
        assert any("SSL_ERROR_SSL" in line for line in core_handshake_lines(daemon.stderr()))

