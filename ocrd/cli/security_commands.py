"""``ocrd gen-certs`` and ``ocrd hash-token``: the files and config lines remote ``ocrctl`` needs.

Both print what to paste into ``ocrd.toml`` and how to call ``ocrctl``, and neither prints a
secret: private keys go to 0600 files, a generated token goes to a 0600 file, and a token read
from stdin is only ever hashed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from pathlib import Path

from ocrd.cli import cert_defaults
from ocrd.config.tokens import Role, check_token_strength, generate_token, hash_token
from ocrd.errors import InvalidRequest

DEFAULT_PORT = 50051


def add_commands(commands: argparse._SubParsersAction) -> None:
    gen = commands.add_parser(
        "gen-certs", help="make a CA, a server and a client certificate for remote ocrctl (TLS)"
    )
    gen.add_argument("directory", metavar="DIR", help="where to write the PEM files")
    gen.add_argument(
        "--host", action="append", default=[], metavar="NAME",
        help="a DNS name or IP address clients use to reach ocrd (repeatable; localhost, "
        "127.0.0.1 and ::1 are always included; default: this machine's hostname)",
    )
    gen.add_argument("--client-name", default=cert_defaults.DEFAULT_CLIENT_NAME,
                     help="common name of the client certificate (see grpc.client_certs)")
    gen.add_argument("--days", type=int, default=cert_defaults.DEFAULT_DAYS,
                     help=f"validity of the server and client certificates (default {cert_defaults.DEFAULT_DAYS})")
    gen.add_argument("--port", type=int, default=DEFAULT_PORT,
                     help="port to show in the printed config lines (default %(default)s)")
    gen.add_argument("--force", action="store_true", help="replace existing files in DIR")

    token = commands.add_parser(
        "hash-token", help="print the config lines for a control-plane token (only its hash)"
    )
    kind = token.add_mutually_exclusive_group(required=True)
    kind.add_argument("--role", choices=[role.value for role in Role],
                      help="read-only: status, lists, gpu, cache ls; admin: also load, unload, delete...")
    kind.add_argument("--http", action="store_true",
                      help="an HTTP API key instead: print an [[http.api_keys]] table (no role)")
    token.add_argument("--name", default="ocrctl", help="who holds the token (shown in ocrd's log)")
    token.add_argument(
        "--generate", metavar="FILE",
        help="make a new random token and write it to FILE (mode 0600) instead of reading "
        "one from stdin",
    )


def run_gen_certs(args: argparse.Namespace) -> int:
    from ocrd.cli import certs  # cryptography: only for this command (see ocrd.cli.cert_defaults)

    hosts = args.host or _this_host()
    made = certs.generate(Path(args.directory), hosts, client_name=args.client_name,
                          days=args.days, force=args.force)
    names = ", ".join(sorted({*hosts, *certs.ALWAYS_NAMED}, key=[*hosts, *certs.ALWAYS_NAMED].index))
    d = made.directory
    print(f"ocrd: made a CA, a server certificate and a client certificate in {d}:")
    print("  ca.pem, ca-key.pem          the CA (keep ca-key.pem private: it can sign more certificates)")
    print(f"  server.pem, server-key.pem  for ocrd, valid for: {names}")
    print(f"  client.pem, client-key.pem  for ocrctl (common name {args.client_name!r})")
    print()
    print("Add to ocrd's configuration (/etc/ocrd/ocrd.toml), then restart ocrd:")
    print()
    print("[grpc]")
    print(f'listen = ["0.0.0.0:{args.port}"]')
    print(f"tls_cert = {_toml_string(made.server_cert)}")
    print(f"tls_key = {_toml_string(made.server_key)}")
    print(f"tls_client_ca = {_toml_string(made.ca_cert)}")
    print()
    print(f"The daemon's user must be able to read server-key.pem (e.g. sudo chown ocrd: {made.server_key}).")
    print("Copy ca.pem, client.pem and client-key.pem to the machine you administer from, then:")
    print()
    print(f"ocrctl --address {_address(hosts[0], args.port)} --tls-ca ca.pem --cert client.pem "
          "--key client-key.pem status")
    return 0


def run_hash_token(args: argparse.Namespace) -> int:
    if args.generate:
        token = generate_token()
        _write_secret(Path(args.generate), token + "\n")
    else:
        token = _read_token()
    try:
        check_token_strength(token)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if args.http:
        _print_api_key(args, token)
        return 0
    print("[[grpc.tokens]]")
    print(f"name = {json.dumps(args.name)}")
    print(f'role = "{args.role}"')
    print(f'hash = "{hash_token(token)}"')
    if args.generate:
        print()
        print(f"# The token itself is in {Path(args.generate).absolute()} (mode 0600); use it with")
        print(f"# ocrctl --token-file {args.generate} ...   or   OCRD_TOKEN=$(cat {args.generate}) ocrctl ...")
    return 0


def _print_api_key(args: argparse.Namespace, key: str) -> None:
    print("[[http.api_keys]]")
    print(f"name = {json.dumps(args.name)}")
    print(f'hash = "{hash_token(key)}"')
    if args.generate:
        print()
        print(f"# The key itself is in {Path(args.generate).absolute()} (mode 0600); clients send it as")
        print("# 'Authorization: Bearer KEY' (OpenAI clients: api_key=KEY or $OPENAI_API_KEY)")


def _read_token() -> str:
    if sys.stdin.isatty():
        token = getpass.getpass("token (not echoed): ")
    else:
        token = sys.stdin.readline()
    if not token.strip():
        raise InvalidRequest("no token on stdin; pipe one in, or pass --generate FILE to make one")
    return token.strip()


def _write_secret(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidRequest(f"{path} already exists; choose another file (a token in use would be lost)") from None
    except OSError as exc:
        raise InvalidRequest(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _this_host() -> list[str]:
    names = [socket.gethostname()]
    fqdn = socket.getfqdn()
    if fqdn not in names and "." in fqdn:
        names.append(fqdn)
    return [name for name in names if name and name != "localhost"] or ["localhost"]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _toml_string(path: Path) -> str:
    return json.dumps(str(path))
