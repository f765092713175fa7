"""The remote control plane for real: gRPC over real TCP sockets with real TLS, using certificates
made by ``ocrd gen-certs`` in temporary directories; tokens made by ``ocrd.config.tokens``.

In-process: start_control_server (the real Scheduler with FakeRunners) driven by grpc.aio
clients and by ocrctl's ``main`` in a worker thread. As processes: a real ``ocrd serve``
(tests/support/daemon.py) driven by the real ``ocrctl`` with --tls-ca/--cert/--key and
$OCRD_TOKEN, whose output and the daemon's log must never contain the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ocrctl.__main__ import main as ocrctl_main
from ocrd.cli import certs
from ocrd.config.tokens import generate_token, hash_token
from ocrd.control.server import start_control_server
from ocrd.control.service import ControlServicer
from ocrd.control.v1 import control_pb2 as pb
from ocrd.control.v1 import control_pb2_grpc
from ocrd.errors import ConfigError
from tests.support.control import PPOCR, Result, settings_for
from tests.support.daemon import OCRCTL, RunningDaemon, daemon_env, free_port, running_daemon, wait_until

ADMIN = generate_token()
READER = generate_token()
TOKENS = [
    {"name": "alice", "role": "admin", "hash": hash_token(ADMIN)},
    {"name": "grafana", "role": "read-only", "hash": hash_token(READER)},
]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> certs.CertificateSet:
    """The daemon's CA, server and client certificates (names: localhost, 127.0.0.1, ::1)."""
    return certs.generate(tmp_path_factory.mktemp("tls") / "ocrd", [])


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> certs.CertificateSet:
    """Another CA's set: its client certificate and CA mean nothing to the daemon."""
    return certs.generate(tmp_path_factory.mktemp("tls") / "other", [])


def tls_settings(tls: certs.CertificateSet, *, mtls: bool = False, **grpc: object) -> dict:
    options = {"listen": ["127.0.0.1:0"], "tls_cert": tls.server_cert, "tls_key": tls.server_key,
               "tokens": TOKENS, **grpc}
    if mtls:
        options["tls_client_ca"] = tls.ca_cert
    return options


@contextlib.asynccontextmanager
async def tcp_control(socket_dir, scheduler, daemon_info, **grpc: object) -> AsyncIterator[str]:
    """A control server with a TCP listener; yields its TCP address (host:port)."""
    server = await start_control_server(settings_for(socket_dir, **grpc),
                                        ControlServicer(scheduler, daemon_info))
    try:
        assert server.addresses[0].startswith("unix://")
        yield server.addresses[1]
    finally:
        await server.stop(None)


@pytest.fixture
def serve(socket_dir, scheduler, daemon_info):
    """``async with serve(**grpc_settings) as address``: tcp_control over this test's scheduler."""
    return lambda **grpc: tcp_control(socket_dir, scheduler, daemon_info, **grpc)


def credentials(tls: certs.CertificateSet, client: certs.CertificateSet | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        tls.ca_cert.read_bytes(),
        client.client_key.read_bytes() if client else None,
        client.client_cert.read_bytes() if client else None,
    )


def token(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


async def ocrctl(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    capsys.readouterr()
    rc = await asyncio.to_thread(ocrctl_main, list(argv))
    out, err = capsys.readouterr()
    return Result(rc, out, err)


def tls_flags(tls: certs.CertificateSet, client: certs.CertificateSet | None = None) -> list[str]:
    flags = ["--tls-ca", str(tls.ca_cert)]
    if client is not None:
        flags += ["--cert", str(client.client_cert), "--key", str(client.client_key)]
    return flags


# --- TLS + tokens, in process -------------------------------------------------------------------


async def test_calls_without_a_known_token_are_unauthenticated(serve, tls):
    async with serve(**tls_settings(tls)) as address:
        async with grpc.aio.secure_channel(address, credentials(tls)) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            for metadata in (None, token("not-a-token-" * 4), token(hash_token(ADMIN))):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetStatus(pb.GetStatusRequest(), metadata=metadata)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_read_only_token_reads_but_may_not_load(serve, tls, runners):
    async with serve(**tls_settings(tls)) as address:
        async with grpc.aio.secure_channel(address, credentials(tls)) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            status = await stub.GetStatus(pb.GetStatusRequest(), metadata=token(READER))
            assert status.version == "9.8.7"
            models = await stub.ListModels(pb.ListModelsRequest(), metadata=token(READER))
            assert PPOCR in [m.id for m in models.models]

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.LoadModel(pb.LoadModelRequest(model=PPOCR), metadata=token(READER)):
                    pass
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "'grafana' is read-only and may not call LoadModel" in refused.value.details()
    assert runners.runners == []


async def test_an_admin_token_loads_and_unloads(serve, tls, runners):
    async with serve(**tls_settings(tls)) as address:
        async with grpc.aio.secure_channel(address, credentials(tls)) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            progress = [p async for p in stub.LoadModel(pb.LoadModelRequest(model=PPOCR), metadata=token(ADMIN))]
            assert progress[-1].state == pb.MODEL_STATE_READY
            await stub.UnloadModel(pb.UnloadModelRequest(model=PPOCR), metadata=token(ADMIN))
    assert [runner.model_id for runner in runners.runners] == [PPOCR]


async def test_health_is_open_and_reflection_needs_a_token(serve, tls):
    async with serve(**tls_settings(tls)) as address:
        async with grpc.aio.secure_channel(address, credentials(tls)) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in reflection.ServerReflectionInfo(iter([ask])):
                    pass
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            [response] = [r async for r in reflection.ServerReflectionInfo(iter([ask]), metadata=token(READER))]
            assert "ocrd.v1.Control" in [s.name for s in response.list_services_response.service]


async def test_the_unix_socket_of_the_same_daemon_needs_no_token(socket_dir, scheduler, daemon_info, tls, runners):
    server = await start_control_server(settings_for(socket_dir, **tls_settings(tls)),
                                        ControlServicer(scheduler, daemon_info))
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            progress = [p async for p in stub.LoadModel(pb.LoadModelRequest(model=PPOCR))]
        assert progress[-1].state == pb.MODEL_STATE_READY
    finally:
        await server.stop(None)


async def test_a_revoked_token_is_refused_after_apply_settings(socket_dir, scheduler, daemon_info, tls):
    server = await start_control_server(settings_for(socket_dir, **tls_settings(tls)),
                                        ControlServicer(scheduler, daemon_info))
    try:
        async with grpc.aio.secure_channel(server.addresses[1], credentials(tls)) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            await stub.GetStatus(pb.GetStatusRequest(), metadata=token(READER))
            server.apply_settings(settings_for(socket_dir, **tls_settings(tls, tokens=TOKENS[:1])))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetStatus(pb.GetStatusRequest(), metadata=token(READER))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            await stub.GetStatus(pb.GetStatusRequest(), metadata=token(ADMIN))
    finally:
        await server.stop(None)


# --- ocrctl against TLS + tokens, in process ----------------------------------------------------


async def test_ocrctl_without_a_token_says_to_set_one(serve, tls, capsys, monkeypatch):
    monkeypatch.delenv("OCRD_TOKEN", raising=False)
    async with serve(**tls_settings(tls)) as address:
        result = await ocrctl(capsys, "--address", address, *tls_flags(tls), "status")

    assert result.rc == 1
    assert result.err == (f"ocrctl: the daemon at {address} needs a token (UNAUTHENTICATED): "
                          "set OCRD_TOKEN or pass --token-file FILE\n")


async def test_ocrctl_with_a_wrong_token_says_so_without_printing_it(serve, tls, capsys, monkeypatch):
    wrong = "wrong-" * 8
    monkeypatch.setenv("OCRD_TOKEN", wrong)
    async with serve(**tls_settings(tls)) as address:
        result = await ocrctl(capsys, "--address", address, *tls_flags(tls), "status")

    assert result.rc == 1
    assert result.err.startswith(f"ocrctl: the daemon at {address} refused the token from $OCRD_TOKEN "
                                 "(UNAUTHENTICATED: ")
    assert result.err.count("\n") == 1
    assert wrong not in result.err + result.out


async def test_ocrctl_reads_the_token_file_and_a_read_only_token_cannot_unload(
        serve, tls, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OCRD_TOKEN", raising=False)
    token_file = tmp_path / "reader.token"
    token_file.write_text(READER + "\n")
    async with serve(**tls_settings(tls)) as address:
        flags = ["--address", address, *tls_flags(tls), "--token-file", str(token_file)]
        status = await ocrctl(capsys, *flags, "status")
        unload = await ocrctl(capsys, *flags, "unload", "ppocr")

    assert status.rc == 0 and status.out.startswith("ocrd 9.8.7"), status.err
    assert address in status.out  # the listeners GetStatus reports
    assert unload.rc == 1
    assert unload.err == ("ocrctl: token 'grafana' is read-only and may not call UnloadModel: "
                          "it needs an admin token or certificate\n")
    assert READER not in status.out + status.err + unload.out + unload.err


async def test_ocrctl_refuses_to_send_a_token_in_plaintext_off_loopback(capsys, monkeypatch):
    monkeypatch.setenv("OCRD_TOKEN", ADMIN)
    result = await ocrctl(capsys, "--address", "192.0.2.10:50051", "status")

    assert result.rc == 1
    assert result.err == ("ocrctl: refusing to send the token in plaintext to 192.0.2.10:50051: "
                          "pass --tls-ca CA.pem (ocrd serves TLS off loopback)\n")


# --- handshakes: mTLS, wrong CA, wrong name, wrong protocol -------------------------------------


async def test_mtls_needs_a_client_certificate_from_the_daemons_ca(serve, tls, stranger, capsys, monkeypatch):
    monkeypatch.setenv("OCRD_TOKEN", READER)
    async with serve(**tls_settings(tls, mtls=True)) as address:
        without = await ocrctl(capsys, "--address", address, *tls_flags(tls), "status")
        foreign = await ocrctl(capsys, "--address", address, "--tls-ca", str(tls.ca_cert),
                               "--cert", str(stranger.client_cert), "--key", str(stranger.client_key), "status")
        right = await ocrctl(capsys, "--address", address, *tls_flags(tls, tls), "status")

    assert without.rc == 1
    assert without.err == (f"ocrctl: ocrd at {address} ended the TLS handshake: it requires a client "
                           "certificate; pass --cert client.pem --key client-key.pem (made by 'ocrd gen-certs')\n")
    assert foreign.rc == 1
    assert foreign.err == (f"ocrctl: ocrd at {address} rejected the client certificate {stranger.client_cert}: "
                           "it is not signed by the CA in the daemon's grpc.tls_client_ca, or not a client "
                           "certificate\n")
    assert right.rc == 0 and right.out.startswith("ocrd 9.8.7"), right.err


async def test_mtls_alone_authenticates_without_a_token(serve, tls, runners):
    grpc_settings = tls_settings(tls, mtls=True, tokens=[])
    async with serve(**grpc_settings) as address:
        async with grpc.aio.secure_channel(address, credentials(tls, tls)) as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            progress = [p async for p in stub.LoadModel(pb.LoadModelRequest(model=PPOCR))]
    assert progress[-1].state == pb.MODEL_STATE_READY


async def test_a_certificate_not_in_client_certs_is_permission_denied(serve, tls):
    grpc_settings = tls_settings(tls, mtls=True, tokens=[], client_certs={"ops-laptop": "admin"})
    async with serve(**grpc_settings) as address:
        async with grpc.aio.secure_channel(address, credentials(tls, tls)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await control_pb2_grpc.ControlStub(channel).GetStatus(pb.GetStatusRequest())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "client certificate 'ocrctl' is not listed in grpc.client_certs"


async def test_ocrctl_explains_a_daemon_certificate_from_another_ca(serve, tls, stranger, capsys, monkeypatch):
    monkeypatch.setenv("OCRD_TOKEN", READER)
    async with serve(**tls_settings(tls)) as address:
        result = await ocrctl(capsys, "--address", address, "--tls-ca", str(stranger.ca_cert), "status")

    assert result.rc == 1
    assert result.err == (f"ocrctl: the certificate of ocrd at {address} is not signed by --tls-ca "
                          f"{stranger.ca_cert}: use the ca.pem made together with the daemon's certificate\n")


async def test_ocrctl_explains_a_certificate_for_another_name(serve, tls, capsys, monkeypatch):
    # 127.0.0.2 is loopback but not among the certificate's names (localhost, 127.0.0.1, ::1).
    monkeypatch.setenv("OCRD_TOKEN", READER)
    async with serve(**tls_settings(tls, listen=["127.0.0.2:0"])) as address:
        wrong = await ocrctl(capsys, "--address", address, *tls_flags(tls), "status")
        named = await ocrctl(capsys, "--address", address, *tls_flags(tls), "--tls-server-name", "localhost", "status")

    assert wrong.rc == 1
    assert wrong.err == (f"ocrctl: the certificate of ocrd at {address} is not valid for 127.0.0.2: remake it "
                         "with 'ocrd gen-certs DIR --host 127.0.0.2', or pass --tls-server-name with a name it has\n")
    assert named.rc == 0, named.err


async def test_ocrctl_explains_plaintext_to_tls_and_tls_to_plaintext(
        socket_dir, scheduler, daemon_info, tls, capsys, monkeypatch):
    monkeypatch.delenv("OCRD_TOKEN", raising=False)
    async with tcp_control(socket_dir, scheduler, daemon_info, **tls_settings(tls)) as address:
        plaintext = await ocrctl(capsys, "--address", address, "status")
    plain_dir = socket_dir / "plain"
    async with tcp_control(plain_dir, scheduler, daemon_info, listen=["127.0.0.1:0"]) as plain_address:
        over_tls = await ocrctl(capsys, "--address", plain_address, *tls_flags(tls), "status")
        no_auth = await ocrctl(capsys, "--address", plain_address, "status")

    assert plaintext.err == (f"ocrctl: ocrd at {address} closed the connection: it probably serves TLS; "
                             "pass --tls-ca CA.pem (and --cert/--key if it requires client certificates)\n")
    assert over_tls.err == (f"ocrctl: ocrd at {plain_address} does not speak TLS: drop --tls-ca "
                            "(plaintext is allowed only on loopback addresses)\n")
    # Loopback plaintext without tokens configured: allowed, every caller is admin.
    assert no_auth.rc == 0 and no_auth.out.startswith("ocrd 9.8.7"), no_auth.err


async def test_ocrctl_option_mistakes_are_one_line(capsys, tls):
    half = await ocrctl(capsys, "--address", "127.0.0.1:1", "--tls-ca", str(tls.ca_cert),
                        "--cert", str(tls.client_cert), "status")
    missing = await ocrctl(capsys, "--address", "127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem", "status")

    assert half.err == "ocrctl: --cert and --key go together: pass both (client.pem and client-key.pem)\n"
    assert missing.err == "ocrctl: --tls-ca /nonexistent/ca.pem does not exist\n"


# --- start-up checks ----------------------------------------------------------------------------


async def test_a_key_that_does_not_match_the_certificate_stops_start_up_and_leaves_no_socket(
        socket_dir, scheduler, daemon_info, tls):
    config = settings_for(socket_dir, **tls_settings(tls, tls_key=tls.client_key))
    with pytest.raises(ConfigError, match="grpc.tls_key is not the private key of the certificate in grpc.tls_cert"):
        await start_control_server(config, ControlServicer(scheduler, daemon_info))
    assert not config.grpc.socket.exists()


async def test_a_missing_certificate_file_is_named(socket_dir, scheduler, daemon_info, tls):
    config = settings_for(socket_dir, **tls_settings(tls, tls_cert=socket_dir / "nope.pem"))
    expected = r"grpc.tls_cert: .*nope.pem does not exist \(make one with 'ocrd gen-certs DIR'\)"
    with pytest.raises(ConfigError, match=expected):
        await start_control_server(config, ControlServicer(scheduler, daemon_info))


async def test_a_port_in_use_is_refused_rather_than_shared(socket_dir, scheduler, daemon_info, tls):
    async with tcp_control(socket_dir, scheduler, daemon_info, **tls_settings(tls)) as address:
        second = settings_for(socket_dir / "second", **tls_settings(tls, listen=[address]))
        with pytest.raises(ConfigError, match=f"grpc.listen: cannot listen on {address}"):
            await start_control_server(second, ControlServicer(scheduler, daemon_info))


async def test_an_empty_tokens_file_off_loopback_is_refused_at_start(socket_dir, scheduler, daemon_info, tls):
    tokens_file = socket_dir / "tokens.toml"
    tokens_file.write_text("# nobody yet\n")
    config = settings_for(socket_dir, **tls_settings(tls, listen=["0.0.0.0:0"], tokens=[], tokens_file=tokens_file))
    with pytest.raises(ConfigError, match="grpc.tokens_file holds no token"):
        await start_control_server(config, ControlServicer(scheduler, daemon_info))


# --- a real `ocrd serve` and the real ocrctl ----------------------------------------------------


def run_ocrctl(daemon: RunningDaemon, address: str, *args: str, token: str | None = None,
               flags: list[str]) -> subprocess.CompletedProcess[str]:
    env = daemon_env({"OCRD_TOKEN": token} if token else None)
    return subprocess.run([OCRCTL, "--address", address, *flags, *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def test_ocrd_serve_refuses_a_plaintext_listener_off_loopback_in_one_line():
    daemon = RunningDaemon({"grpc": {"listen": [f"0.0.0.0:{free_port()}"]}}, wait_ready=False)
    try:
        assert daemon.process.wait(timeout=60) == 2
        lines = daemon.stderr().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("ocrd: configuration error: grpc.listen: refusing plaintext gRPC on 0.0.0.0:")
        assert "grpc.tls_cert" in lines[0] and "ocrd gen-certs" in lines[0]
        assert not daemon.socket_path.exists()
    finally:
        daemon.kill()
        daemon.close()


def test_ocrctl_end_to_end_over_mtls_with_tokens_and_revocation_on_sighup(tls, stranger):
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = {"log_level": "debug", "grpc": {"listen": [address], "tls_cert": tls.server_cert,
                                             "tls_key": tls.server_key, "tls_client_ca": tls.ca_cert}}
    with running_daemon(config) as daemon:
        tokens_file = daemon.dir / "tokens.toml"
        write_tokens(tokens_file, TOKENS)
        daemon.config = {**daemon.config, "grpc": {**config["grpc"], "tokens_file": tokens_file}}
        daemon.write_config(daemon.config)
        flags = tls_flags(tls, tls)
        # Started without tokens: client certificates alone authenticate (as admin).
        assert run_ocrctl(daemon, address, "status", flags=flags).returncode == 0
        hup_and_wait(daemon, lambda: run_ocrctl(daemon, address, "status", flags=flags).returncode == 1)

        results = [
            run_ocrctl(daemon, address, "status", token=READER, flags=flags),
            run_ocrctl(daemon, address, "unload", "ppocr", token=READER, flags=flags),
            run_ocrctl(daemon, address, "unload", "ppocr", token=ADMIN, flags=flags),
            run_ocrctl(daemon, address, "status", token="forged-" * 6, flags=flags),
        ]
        status, denied, unloaded, forged = results
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout, status.stderr
        assert denied.returncode == 1 and "'grafana' with certificate 'ocrctl' is read-only" in denied.stderr
        assert unloaded.returncode == 0, unloaded.stderr
        assert forged.returncode == 1 and forged.stderr.count("\n") == 1 and "UNAUTHENTICATED" in forged.stderr

        write_tokens(tokens_file, TOKENS[:1])  # revoke grafana's token
        hup_and_wait(daemon, lambda: run_ocrctl(daemon, address, "status", token=READER, flags=flags).returncode == 1)
        assert run_ocrctl(daemon, address, "status", token=ADMIN, flags=flags).returncode == 0

        outputs = "".join(r.stdout + r.stderr for r in results)
        log = daemon.stderr()
    assert "refused UnloadModel" in log and "UnloadModel by token 'alice'" in log
    for secret in (READER, ADMIN):
        assert secret not in outputs
        assert secret not in log
    assert "PRIVATE KEY" not in log


def write_tokens(path: Path, tokens: list[dict[str, str]]) -> None:
    tables = "".join(f'[[tokens]]\nname = "{t["name"]}"\nrole = "{t["role"]}"\nhash = "{t["hash"]}"\n\n'
                     for t in tokens)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(tables)
    temporary.replace(path)


def hup_and_wait(daemon: RunningDaemon, changed) -> None:
    daemon.send_signal(signal.SIGHUP)
    wait_until(changed, timeout=30, interval=0.2, message="the reloaded tokens to apply")
