"""ocrd.control.auth and ocrd.config.tokens: every RPC has a role (and docs/security.md says the
same), who a caller is from their token and/or client certificate, and that only token hashes
are stored and compared.

The auth context passed to ``identify`` has the shape gRPC gives a servicer
(``context.auth_context()``); the real handshake is in tests/integration/test_control_tls.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ocrd.config.tokens import (
    Role,
    StoredToken,
    TokenTable,
    check_token_strength,
    generate_token,
    hash_token,
)
from ocrd.control.auth import (
    CONTROL_RPC_ROLES,
    Authenticator,
    required_role,
)
from ocrd.control.v1 import control_pb2
from ocrd.errors import PermissionDenied, Unauthenticated

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "a" * 20 + generate_token()
READER_TOKEN = "r" * 20 + generate_token()
TOKENS = TokenTable([
    StoredToken("alice", Role.ADMIN, hash_token(ADMIN_TOKEN)),
    StoredToken("monitor", Role.READ_ONLY, hash_token(READER_TOKEN)),
])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "grpc-python"), ("authorization", f"Bearer {token}")]


def peer_with_certificate(common_name: str) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], "x509_common_name": [common_name.encode()]}


NO_CERTIFICATE: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}


# --- the role table ---------------------------------------------------------------------------


def test_every_control_rpc_has_a_role_and_the_table_names_no_other():
    methods = {m.name for m in control_pb2.DESCRIPTOR.services_by_name["Control"].methods}

    assert methods - set(CONTROL_RPC_ROLES) == set(), "give each new RPC a role in CONTROL_RPC_ROLES"
    assert set(CONTROL_RPC_ROLES) - methods == set()


def test_docs_table_lists_every_rpc_with_the_role_the_code_enforces():
    text = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (admin|read-only) \|", text, re.M))

    assert rows == {name: role.value for name, role in CONTROL_RPC_ROLES.items()}


@pytest.mark.parametrize("method", ["GetStatus", "ListModels", "GetGpu", "ListCache"])
def test_the_issues_read_only_calls_need_only_read_only(method):
    assert required_role(f"/ocrd.v1.Control/{method}") is Role.READ_ONLY


@pytest.mark.parametrize("method", ["LoadModel", "UnloadModel", "DeleteCache", "Cleanup", "PullModel"])
def test_calls_that_change_state_need_admin(method):
    assert required_role(f"/ocrd.v1.Control/{method}") is Role.ADMIN


def test_health_is_open_and_reflection_needs_any_authenticated_caller():
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo") is Role.READ_ONLY
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is Role.READ_ONLY


def test_a_control_method_without_a_role_is_refused_to_everyone():
    with pytest.raises(PermissionDenied, match="FormatDisk has no role"):
        required_role("/ocrd.v1.Control/FormatDisk")


def test_an_unknown_service_needs_admin():
    assert required_role("/other.v1.Service/Do") is Role.ADMIN


def test_admin_allows_read_only_calls_but_not_the_reverse():
    assert Role.ADMIN.allows(Role.READ_ONLY) and Role.ADMIN.allows(Role.ADMIN)
    assert Role.READ_ONLY.allows(Role.READ_ONLY) and not Role.READ_ONLY.allows(Role.ADMIN)


# --- tokens -----------------------------------------------------------------------------------


def test_a_token_identifies_its_holder_and_role():
    auth = Authenticator(TOKENS)

    assert auth.identify(bearer(ADMIN_TOKEN), NO_CERTIFICATE).role is Role.ADMIN
    reader = auth.identify(bearer(READER_TOKEN), NO_CERTIFICATE)
    assert reader.role is Role.READ_ONLY and "monitor" in reader.name


def test_the_bearer_scheme_is_case_insensitive_and_metadata_may_be_bytes():
    auth = Authenticator(TOKENS)

    assert auth.identify([("authorization", f"bearer {ADMIN_TOKEN}")], {}).role is Role.ADMIN
    assert auth.identify([("authorization", f"BEARER {ADMIN_TOKEN}".encode())], {}).role is Role.ADMIN


def test_no_token_is_unauthenticated_and_says_how_to_send_one():
    with pytest.raises(Unauthenticated, match="none was sent.*OCRD_TOKEN"):
        Authenticator(TOKENS).identify([("user-agent", "x")], NO_CERTIFICATE)


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer ", ADMIN_TOKEN])
def test_authorization_that_is_not_bearer_is_unauthenticated(value):
    with pytest.raises(Unauthenticated, match="not 'Bearer <token>'"):
        Authenticator(TOKENS).identify([("authorization", value)], NO_CERTIFICATE)


def test_an_unknown_token_is_unauthenticated_and_the_message_does_not_repeat_it():
    wrong = "w" * 40
    with pytest.raises(Unauthenticated) as refused:
        Authenticator(TOKENS).identify(bearer(wrong), NO_CERTIFICATE)
    assert "not one ocrd knows" in refused.value.message
    assert wrong not in refused.value.message


def test_hashes_are_stored_and_the_stored_hash_is_no_password():
    # Whoever reads the config learns hashes; presenting one must not let them in.
    stored = hash_token(ADMIN_TOKEN)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored) and ADMIN_TOKEN not in stored

    assert TOKENS.find(stored) is None
    assert TOKENS.find(stored.removeprefix("sha256:")) is None
    assert TOKENS.find(ADMIN_TOKEN).name == "alice"


def test_hashing_ignores_surrounding_whitespace_like_a_token_file_newline():
    assert hash_token(f"  {ADMIN_TOKEN}\n") == hash_token(ADMIN_TOKEN)
    assert TOKENS.find(ADMIN_TOKEN + "\n").name == "alice"


def test_generated_tokens_are_long_random_and_pass_the_strength_check():
    first, second = generate_token(), generate_token()
    assert first != second and len(first) >= 43
    check_token_strength(first)
    with pytest.raises(ValueError, match="at least 32"):
        check_token_strength("password123")


# --- client certificates ----------------------------------------------------------------------


def test_any_certificate_the_ca_signed_is_admin_when_no_names_are_listed():
    identity = Authenticator(TokenTable([]), mtls=True).identify([], peer_with_certificate("ocrctl"))

    assert identity.role is Role.ADMIN and "ocrctl" in identity.name


def test_listed_certificate_names_get_their_role_and_others_are_denied():
    auth = Authenticator(TokenTable([]), mtls=True,
                         client_certs={"ops": Role.ADMIN, "grafana": Role.READ_ONLY})

    assert auth.identify([], peer_with_certificate("ops")).role is Role.ADMIN
    assert auth.identify([], peer_with_certificate("grafana")).role is Role.READ_ONLY
    with pytest.raises(PermissionDenied, match="'intruder' is not listed in grpc.client_certs"):
        auth.identify([], peer_with_certificate("intruder"))


def test_mtls_without_a_verified_certificate_is_unauthenticated():
    with pytest.raises(Unauthenticated, match="no verified client certificate"):
        Authenticator(TokenTable([]), mtls=True).identify([], NO_CERTIFICATE)


def test_with_tokens_and_certificates_both_are_needed_and_the_lower_role_wins():
    auth = Authenticator(TOKENS, mtls=True, client_certs={"grafana": Role.READ_ONLY, "ops": Role.ADMIN})

    assert auth.identify(bearer(ADMIN_TOKEN), peer_with_certificate("grafana")).role is Role.READ_ONLY
    assert auth.identify(bearer(READER_TOKEN), peer_with_certificate("ops")).role is Role.READ_ONLY
    assert auth.identify(bearer(ADMIN_TOKEN), peer_with_certificate("ops")).role is Role.ADMIN
    with pytest.raises(Unauthenticated):
        auth.identify([], peer_with_certificate("ops"))


def test_without_tokens_or_certificates_the_loopback_caller_is_admin():
    assert Authenticator(TokenTable([])).identify([], {}).role is Role.ADMIN
