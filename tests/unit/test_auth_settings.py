"""The remote control plane's settings (grpc.listen, grpc.tls_*, grpc.tokens, grpc.tokens_file):
what ``ocrd check-config`` and ``ocrd serve`` refuse, and how they say so. Real TOML files in
tmp_path, through load_settings and the ``ocrd`` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrd.addresses import is_loopback_host, split_host_port
from ocrd.cli.main import EXIT_OK, EXIT_USAGE, main
from ocrd.config.loading import load_settings
from ocrd.config.remote import load_tokens_file
from ocrd.config.settings import Settings
from ocrd.config.tokens import Role, hash_token
from ocrd.errors import ConfigError
from tests.support.files import write

pytestmark = pytest.mark.usefixtures("isolated_config")

TOKEN_HASH = hash_token("t" * 43)


def config(tmp_path: Path, grpc_lines: str) -> Path:
    return write(tmp_path / "ocrd.toml", "[grpc]\n" + grpc_lines)


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    return refused.value.message


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:50051", ("127.0.0.1", 50051)),
    ("[::1]:0", ("::1", 0)),
    ("gpu1.example:443", ("gpu1.example", 443)),
])
def test_listen_addresses_are_host_and_port(text, expected):
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["50051", "host:", ":50051", "::1:50051", "host:99999", "host:port"])
def test_malformed_listen_addresses_are_refused(text):
    with pytest.raises(ValueError):
        split_host_port(text)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gpu1.example", False),
    ("localhost.evil.example", False),
])
def test_only_loopback_addresses_and_localhost_count_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


# --- what start-up refuses ----------------------------------------------------------------------


def test_plaintext_off_loopback_is_refused_naming_the_tls_keys_and_gen_certs(tmp_path):
    message = load_error(config(tmp_path, 'listen = ["0.0.0.0:50051"]\n'))

    assert message.startswith("grpc.listen: refusing plaintext gRPC on 0.0.0.0:50051")
    assert "grpc.tls_cert" in message and "grpc.tls_key" in message
    assert "ocrd gen-certs" in message
    assert "\n" not in message


def test_plaintext_on_loopback_is_allowed(tmp_path):
    settings = load_settings(config(tmp_path, 'listen = ["127.0.0.1:50051", "[::1]:50052"]\n'))

    assert settings.grpc.listen == ["127.0.0.1:50051", "[::1]:50052"]


def test_tls_off_loopback_without_tokens_or_client_ca_is_refused(tmp_path):
    message = load_error(config(tmp_path, 'listen = ["0.0.0.0:50051"]\n'
                                          'tls_cert = "s.pem"\ntls_key = "k.pem"\n'))

    assert "without authentication" in message
    assert "grpc.tokens" in message and "grpc.tls_client_ca" in message


@pytest.mark.parametrize("auth", [
    f'[[grpc.tokens]]\nname = "ci"\nrole = "read-only"\nhash = "{TOKEN_HASH}"\n',
    'tokens_file = "tokens.toml"\n',
    'tls_client_ca = "ca.pem"\n',
])
def test_tls_off_loopback_with_tokens_or_client_certificates_is_accepted(tmp_path, auth):
    top, tables = (auth, "") if not auth.startswith("[[") else ("", auth)
    settings = load_settings(config(
        tmp_path, f'listen = ["0.0.0.0:50051"]\ntls_cert = "s.pem"\ntls_key = "k.pem"\n{top}{tables}'
    ))

    assert settings.grpc.listen == ["0.0.0.0:50051"]


@pytest.mark.parametrize("lines, expected", [
    ('tls_cert = "s.pem"\n', "grpc.tls_cert and grpc.tls_key go together"),
    ('tls_key = "k.pem"\n', "grpc.tls_cert and grpc.tls_key go together"),
    ('tls_client_ca = "ca.pem"\n', "grpc.tls_client_ca (client certificates) needs TLS"),
    ('tls_cert = "s.pem"\ntls_key = "k.pem"\n[grpc.client_certs]\nops = "admin"\n',
     "grpc.client_certs needs grpc.tls_client_ca"),
    ('listen = ["gpu1"]\n', "is not host:port"),
])
def test_inconsistent_tls_settings_are_refused(tmp_path, lines, expected):
    # listen is what triggers the cross-key check; put one in front unless the case has its own.
    text = lines if lines.startswith("listen") else 'listen = ["127.0.0.1:0"]\n' + lines
    assert expected in load_error(config(tmp_path, text))


def test_a_token_pasted_where_its_hash_belongs_is_refused_without_echoing_it(tmp_path):
    secret = "s3cret-" * 6
    message = load_error(config(
        tmp_path, f'[[grpc.tokens]]\nname = "ci"\nrole = "admin"\nhash = "{secret}"\n'
    ))

    assert message.startswith("grpc.tokens.0.hash: store the token's hash")
    assert secret not in message


def test_unknown_roles_are_refused(tmp_path):
    message = load_error(config(
        tmp_path, f'[[grpc.tokens]]\nname = "ci"\nrole = "root"\nhash = "{TOKEN_HASH}"\n'
    ))
    assert message.startswith("grpc.tokens.0.role:")


def test_the_same_hash_twice_is_refused(tmp_path):
    table = f'[[grpc.tokens]]\nname = "a"\nrole = "admin"\nhash = "{TOKEN_HASH}"\n'
    message = load_error(config(tmp_path, 'listen = ["127.0.0.1:0"]\n' + table + table.replace('"a"', '"b"')))
    assert "same token hash twice" in message


def test_client_certificate_roles_are_read_as_roles(tmp_path):
    settings = load_settings(config(
        tmp_path, 'listen = ["0.0.0.0:1"]\ntls_cert = "s"\ntls_key = "k"\ntls_client_ca = "c"\n'
                  '[grpc.client_certs]\nops = "admin"\ngrafana = "read-only"\n'
    ))
    assert settings.grpc.client_certs == {"ops": Role.ADMIN, "grafana": Role.READ_ONLY}


def test_listen_from_the_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("OCRD_GRPC__LISTEN", '["0.0.0.0:50051"]')
    with pytest.raises(ConfigError, match=r"refusing plaintext .*\(from \$OCRD_GRPC__LISTEN\)"):
        load_settings()


def test_defaults_open_no_tcp_listener():
    grpc = Settings().grpc
    assert grpc.listen == [] and grpc.tokens == [] and grpc.tls_cert is None


# --- the tokens file --------------------------------------------------------------------------


def test_tokens_file_holds_tokens_tables(tmp_path):
    path = write(tmp_path / "tokens.toml", f"""
        [[tokens]]
        name = "grafana"
        role = "read-only"
        hash = "{TOKEN_HASH}"
        """)

    [token] = load_tokens_file(path)
    assert (token.name, token.role, token.hash) == ("grafana", Role.READ_ONLY, TOKEN_HASH)


@pytest.mark.parametrize("text, expected", [
    ("[[tokens]]\nname = 'x'\nrole = 'admin'\nhash = 'plain'\n", "tokens.0.hash: store the token's hash"),
    ("[[tokens]\n", "not valid TOML"),
    ("[[keys]]\nname = 'x'\n", "unknown key 'keys'"),
])
def test_a_bad_tokens_file_is_one_line_naming_the_file(tmp_path, text, expected):
    path = write(tmp_path / "tokens.toml", text)
    with pytest.raises(ConfigError) as refused:
        load_tokens_file(path)
    assert refused.value.message.startswith(f"grpc.tokens_file: {path}")
    assert expected in refused.value.message


def test_a_missing_tokens_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokens_file(tmp_path / "nope.toml")


# --- through the CLI --------------------------------------------------------------------------


def test_check_config_reports_a_plaintext_remote_listener_in_one_line(tmp_path, capsys):
    path = config(tmp_path, 'listen = ["0.0.0.0:50051"]\n')

    assert main(["check-config", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("ocrd: configuration error: grpc.listen: refusing plaintext gRPC")
    assert err.count("\n") == 1


def test_check_config_accepts_loopback_plaintext(tmp_path, capsys):
    assert main(["check-config", "--config", str(config(tmp_path, 'listen = ["127.0.0.1:50051"]\n'))]) == EXIT_OK
