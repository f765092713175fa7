"""``ocrd serve | check-config | print-config | default-config | version | gen-certs | hash-token``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from ocrd import __version__
from ocrd.cli import security_commands
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
    show = commands.add_parser("print-config", help="print the effective configuration as TOML")
    _add_config_flag(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
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
        data = settings.model_dump(mode="json")
        print(json.dumps(data, indent=2) if args.json else to_toml(data))
        return EXIT_OK
    setup_logging(settings)
    from ocrd.daemon import serve  # the daemon's imports are not needed for the other commands

    return serve(settings, args.config, overrides)


def setup_logging(settings: Settings) -> None:
    # Under systemd the journal adds timestamps and the unit name.
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(format=fmt, stream=sys.stderr)
    from ocrd.daemon import apply_log_level  # also applied again on SIGHUP

    apply_log_level(settings.log_level)


def to_toml(data: dict[str, Any]) -> str:
    """TOML for the settings' shape: scalars, lists of scalars, nested tables."""
    lines: list[str] = []
    _emit_table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def _emit_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    arrays = {k: v for k, v in table.items()
              if isinstance(v, list) and v and all(isinstance(item, dict) for item in v)}
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and k not in arrays}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
    for key, value in scalars.items():
        if value is not None:  # TOML has no null: an unset optional is simply absent
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables.items():
        _emit_table(lines, [*path, key], value)
    for key, items in arrays.items():  # [[upstreams]]: flat tables
        for item in items:
            lines += ["", "[[" + ".".join(_toml_key(p) for p in [*path, key]) + "]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items() if v is not None]


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
