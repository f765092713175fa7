"""``ocrd gen-certs`` and ``ocrd hash-token``: real certificates made with ``cryptography`` in
tmp_path, checked with ``cryptography`` (chain, names, key usages, file modes), and the printed
config lines loaded as a real configuration. The TLS handshakes themselves are in
tests/integration/test_control_tls.py."""

from __future__ import annotations

import datetime
import ipaddress
import re
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ocrd.cli import certs
from ocrd.cli.main import main
from ocrd.config.loading import load_settings
from ocrd.config.tokens import hash_token
from ocrd.errors import ConfigError, InvalidRequest
from tests.support.files import write

pytestmark = pytest.mark.usefixtures("isolated_config")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def made(tmp_path: Path) -> certs.CertificateSet:
    return certs.generate(tmp_path / "tls", ["gpu1.example", "10.0.0.5"])


def test_server_and_client_certificates_are_signed_by_the_ca(made):
    ca = load(made.ca_cert)
    for leaf in (made.server_cert, made.client_cert):
        load(leaf).verify_directly_issued_by(ca)  # raises when not
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert load(made.server_cert).extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_server_certificate_names_the_hosts_and_always_localhost(made):
    names = load(made.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert names.get_values_for_type(x509.DNSName) == ["gpu1.example", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
    ]


def test_each_certificate_is_only_good_for_its_side(made):
    def usages(path: Path) -> list[x509.ObjectIdentifier]:
        return list(load(path).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert usages(made.server_cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usages(made.client_cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    common_name = load(made.client_cert).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "ocrctl"


def test_keys_are_private_to_their_owner_and_certificates_readable(made):
    for key in (made.ca_key, made.server_key, made.client_key):
        assert mode(key) == 0o600, key
    for cert in (made.ca_cert, made.server_cert, made.client_cert):
        assert mode(cert) == 0o644, cert


def test_validity_follows_days(tmp_path):
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    made = certs.generate(tmp_path / "tls", [], days=30, now=now)

    assert load(made.server_cert).not_valid_after_utc == now + datetime.timedelta(days=30)
    assert load(made.server_cert).not_valid_before_utc <= now


def test_existing_files_are_never_replaced_without_force(made):
    before = made.ca_cert.read_bytes()
    with pytest.raises(InvalidRequest, match="ca.pem already exists.*--force"):
        certs.generate(made.directory, [])
    assert made.ca_cert.read_bytes() == before

    certs.generate(made.directory, [], force=True)
    assert made.ca_cert.read_bytes() != before
    assert mode(made.server_key) == 0o600


@pytest.mark.parametrize("host", ["bad name", "under_score.example", "-lead.example", "a/b"])
def test_hosts_that_are_neither_ips_nor_dns_names_are_refused_before_writing(tmp_path, host):
    with pytest.raises(InvalidRequest, match="neither an IP address nor a DNS name"):
        certs.generate(tmp_path / "tls", [host])
    assert not (tmp_path / "tls").exists()


def test_the_key_pair_check_accepts_matching_files_and_names_the_key_of_a_mismatch(made, tmp_path):
    certs.check_key_pair(made.server_cert.read_bytes(), made.server_key.read_bytes(),
                         cert_key="grpc.tls_cert", key_key="grpc.tls_key")

    with pytest.raises(ConfigError, match="grpc.tls_key is not the private key of the certificate in grpc.tls_cert"):
        certs.check_key_pair(made.server_cert.read_bytes(), made.client_key.read_bytes(),
                             cert_key="grpc.tls_cert", key_key="grpc.tls_key")
    with pytest.raises(ConfigError, match="grpc.tls_cert: not a PEM certificate"):
        certs.check_key_pair(b"junk", made.server_key.read_bytes(), cert_key="grpc.tls_cert", key_key="grpc.tls_key")
    with pytest.raises(ConfigError, match="grpc.tls_key: not an unencrypted PEM private key"):
        certs.check_key_pair(made.server_cert.read_bytes(), made.server_cert.read_bytes(),
                             cert_key="grpc.tls_cert", key_key="grpc.tls_key")


# --- the commands ----------------------------------------------------------------------------


def test_gen_certs_prints_config_lines_that_load_as_a_valid_configuration(tmp_path, capsys):
    assert main(["gen-certs", str(tmp_path / "tls"), "--host", "gpu1.example", "--port", "50999"]) == 0
    out = capsys.readouterr().out

    block = re.search(r"^\[grpc\]\n(?:.+\n)+", out, re.M).group(0)
    grpc = tomllib.loads(block)["grpc"]
    assert grpc["listen"] == ["0.0.0.0:50999"]
    assert Path(grpc["tls_key"]) == tmp_path / "tls" / "server-key.pem"
    settings = load_settings(write(tmp_path / "ocrd.toml", block))
    assert settings.grpc.tls_client_ca == tmp_path / "tls" / "ca.pem"
    assert ("ocrctl --address gpu1.example:50999 --tls-ca ca.pem --cert client.pem "
            "--key client-key.pem status") in out
    assert "PRIVATE KEY" not in out


def test_gen_certs_refusal_is_one_line_and_exit_1(tmp_path, capsys):
    main(["gen-certs", str(tmp_path)])
    capsys.readouterr()

    assert main(["gen-certs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ocrd: ") and err.count("\n") == 1 and "--force" in err


def test_hash_token_generate_writes_the_token_to_a_private_file_and_prints_only_its_hash(tmp_path, capsys):
    path = tmp_path / "admin.token"
    assert main(["hash-token", "--role", "admin", "--name", "alice", "--generate", str(path)]) == 0
    out = capsys.readouterr().out

    token = path.read_text().strip()
    assert mode(path) == 0o600 and len(token) >= 43
    assert token not in out
    table = tomllib.loads(out)["grpc"]["tokens"][0]
    assert table == {"name": "alice", "role": "admin", "hash": hash_token(token)}


def test_hash_token_never_overwrites_a_token_file(tmp_path, capsys):
    path = write(tmp_path / "t", "keep me\n")
    assert main(["hash-token", "--role", "admin", "--generate", str(path)]) == 1
    assert path.read_text() == "keep me\n"
    assert "already exists" in capsys.readouterr().err


def test_hash_token_hashes_a_token_from_stdin(monkeypatch, capsys):
    import io

    token = "x" * 40
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["hash-token", "--role", "read-only"]) == 0
    out = capsys.readouterr().out
    assert f'hash = "{hash_token(token)}"' in out and token not in out


def test_hash_token_refuses_a_short_token(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert main(["hash-token", "--role", "admin"]) == 1
    err = capsys.readouterr().err
    assert "at least 32" in err and "hunter2" not in err
