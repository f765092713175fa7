"""``ocrd serve | check-config | print-config | default-config | version | gen-certs | hash-token``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ocrd import __version__
from ocrd.cli import security_commands
from ocrd.cli.default_config import _item_class, _model_class, _toml_key, toml_value
from ocrd.config.loading import load_settings, unknown_env_variables
from ocrd.config.settings import Settings
from ocrd.errors import ConfigError, OcrdError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
SECURITY_COMMANDS = {
    "gen-certs": security_commands.run_gen_certs,
    "hash-token": security_commands.run_hash_token,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocrd",
        description="Serves OCR and vision-language models through an OpenAI-compatible API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    _add_config_flag(serve)
    serve.add_argument("--host", help="HTTP bind address (http.host)")
    serve.add_argument("--port", type=int, help="HTTP port, 0 for any free one (http.port)")
    serve.add_argument("--socket", help="control-plane Unix socket (grpc.socket)")
    serve.add_argument("--runtime-dir", help="directory for runner sockets (runtime_dir)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check-config", help="validate the configuration and exit")
    _add_config_flag(check)
    about = ("print the configuration in effect (defaults, file, OCRD_* variables) as TOML: "
             "every key, an unset one as a comment (TOML has no null)")
    show = commands.add_parser("print-config", help=about, description=about[0].upper() + about[1:])
    _add_config_flag(show)
    show.add_argument("--json", action="store_true", help="print JSON instead (unset keys: null)")
    commands.add_parser(
        "default-config",
        help="print the documented default configuration (packaging/ocrd.toml): every key "
        "commented out with its default and description",
    )
    commands.add_parser("version", help="print the version")
    security_commands.add_commands(commands)
    return parser


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH",
        help="TOML configuration file (default: $OCRD_CONFIG, else /etc/ocrd/ocrd.toml if present)",
    )


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as the top layer of the settings."""
    overrides: dict[str, Any] = {}
    http = {k: v for k, v in (("host", getattr(args, "host", None)),
                              ("port", getattr(args, "port", None))) if v is not None}
    if http:
        overrides["http"] = http
    if getattr(args, "socket", None):
        overrides["grpc"] = {"socket": args.socket}
    if getattr(args, "runtime_dir", None):
        overrides["runtime_dir"] = args.runtime_dir
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"ocrd {__version__}")
        return EXIT_OK
    if args.command == "default-config":  # the built-in defaults: no file or environment read
        from ocrd.cli.default_config import render_default_config

        print(render_default_config(), end="")
        return EXIT_OK
    if args.command in SECURITY_COMMANDS:  # set-up helpers: no configuration needed
        try:
            return SECURITY_COMMANDS[args.command](args)
        except OcrdError as exc:
            print(f"ocrd: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
    overrides = flag_overrides(args)
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(f"ocrd: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    for name in unknown_env_variables():
        print(f"ocrd: warning: ${name} is not a setting and is ignored (nested keys use '__', "
              f"e.g. OCRD_HTTP__PORT)", file=sys.stderr)
    if args.command == "check-config":
        source = settings.config_path or "built-in defaults"
        print(f"ocrd: configuration OK ({source})")
        return EXIT_OK
    if args.command == "print-config":
        if args.json:
            print(json.dumps(settings.model_dump(mode="json"), indent=2))
        else:
            print(render_effective_config(settings), end="")
        return EXIT_OK
    quiet_grpc_core()
    setup_logging(settings)
    from ocrd.daemon import serve  # the daemon's imports are not needed for the other commands

    return serve(settings, args.config, overrides)


def quiet_grpc_core() -> None:
    """Keeps gRPC's C core to its errors in the daemon's log.

    The core logs every failed TLS handshake on a grpc.listen port at INFO, straight to stderr
    past Python's logging ("I1206 ... ssl_transport_security.cc:2563] Handshake failed with error
    SSL_ERROR_SSL: ... WRONG_VERSION_NUMBER"): a port scanner or a plaintext client leaves a line
    that reads like a fault of ocrd, and anyone who can reach the port can fill the journal. The
    client is told what went wrong (ocrctl explains it in one line), and the server learns nothing
    it could act on. GRPC_VERBOSITY is gRPC's documented switch (it sets absl's minimum log level);
    ERROR keeps the core's real errors. It is read when gRPC starts, so this runs before anything
    imports grpc; a value the user set wins (docs/security.md: debugging a connection)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def setup_logging(settings: Settings) -> None:
    # Under systemd the journal adds timestamps and the unit name.
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(format=fmt, stream=sys.stderr)
    from ocrd.daemon import apply_log_level  # also applied again on SIGHUP

    apply_log_level(settings.log_level)


def render_effective_config(settings: Settings) -> str:
    """The settings in effect as TOML, every key of every table. TOML has no null, so a key that
    is unset is written as a comment saying what unset means (``# tls_cert = (unset)``): the
    output parses, and loads back into the same settings."""
    layers = ["built-in defaults", *([str(settings.config_path)] if settings.config_path else []),
              "OCRD_* variables"]
    lines = [f"# The configuration in effect: {' < '.join(layers)}.",
             "# Keys shown commented out are unset (TOML has no null)."]
    _emit_table(lines, [], type(settings), settings.model_dump(mode="json"), header=None)
    return "\n".join(lines).strip() + "\n"


def _emit_table(lines: list[str], path: list[str], model: type[BaseModel], data: dict[str, Any],
                header: str | None) -> None:
    """One table: its header, its keys (scalars, lists, inline tables), then the tables below it,
    which must come after every key of this one."""
    if header is not None:
        lines += ["", header]
    below: list[tuple[list[str], type[BaseModel], dict[str, Any], str]] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        value, where = data[name], [*path, name]
        if (section := _model_class(field.annotation)) is not None:
            below.append((where, section, value, f"[{_dotted(where)}]"))
        elif (item := _item_class(field.annotation)) is not None and value:
            if isinstance(value, dict):  # [models."ID"]
                below += [([*where, key], item, entry, f"[{_dotted([*where, key])}]")
                          for key, entry in value.items()]
            else:  # [[upstreams]]
                below += [(where, item, entry, f"[[{_dotted(where)}]]") for entry in value]
        elif value is None:
            lines.append(f"# {_toml_key(name)} = {_unset_meaning(field)}")
        else:
            lines.append(f"{_toml_key(name)} = {toml_value(value)}")
    for where, section, value, table_header in below:
        _emit_table(lines, where, section, value, table_header)


def _unset_meaning(field: FieldInfo) -> str:
    # The descriptions say what unset means ("...; unset: the one running ocrd.") or which
    # setting applies instead ("(wins over scheduler.keep_alive)").
    description = " ".join((field.description or "").split())
    if found := re.search(r"\bunset: (.+?)(?:[.;](?:\s|$)|$)", description):
        return f"(unset: {found.group(1)})"
    if found := re.search(r"\bwins over (\w+\.\w+)", description):
        return f"(unset: {found.group(1)} applies)"
    return "(unset)"


def _dotted(path: list[str]) -> str:
    return ".".join(_toml_key(part) for part in path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
