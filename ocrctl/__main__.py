"""``ocrctl``: administers a running ocrd over its gRPC control plane.

Exit codes: 0 ok, 1 error (one line on stderr, never a traceback), 2 usage (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc

from ocrctl.client import Client, CommandError, describe_rpc_error
from ocrctl.commands import COMMAND_MODULES
from ocrctl.security import ENV_TOKEN, Security, SecurityError
from ocrd.addresses import ENV_ADDRESS, SYSTEM_SOCKET, default_socket_path, to_grpc_target


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Flags accepted before and after the command (``ocrctl --json ps`` = ``ocrctl ps --json``).

    The copy on each command uses SUPPRESS defaults so that it does not overwrite a value given
    before the command.
    """
    default = argparse.SUPPRESS
    parser.add_argument(
        "--address",
        default=default if suppress else None,
        help=f"control socket (unix:///path or a path) or host:port; default ${ENV_ADDRESS} "
        f"or {to_grpc_target(default_socket_path())} (when it exists, else the system "
        f"service's {to_grpc_target(SYSTEM_SOCKET)})",
    )
    for flag, metavar, text in (
        ("--tls-ca", "FILE", "CA certificate (PEM) that signed the daemon's certificate; "
         "turns on TLS for a host:port address"),
        ("--cert", "FILE", "client certificate (PEM) when the daemon requires one (mTLS)"),
        ("--key", "FILE", "private key (PEM) of --cert"),
        ("--tls-server-name", "NAME", "name to check the daemon's certificate against, when "
         "--address uses another (e.g. an IP address the certificate does not list)"),
        ("--token-file", "FILE", f"file holding the bearer token (default ${ENV_TOKEN}); "
         "sent only over TCP"),
    ):
        parser.add_argument(flag, metavar=metavar, default=default if suppress else None, help=text)
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="machine-readable output (streams: one JSON object per line)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=default if suppress else None,
        metavar="SECONDS",
        help="deadline for each call (default: 30 s; streams such as load and events: none)",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocrctl", description="Administer ocrd, the OCR and vision-language model daemon."
    )
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    try:
        security = Security.from_options(
            tls_ca=args.tls_ca, cert=args.cert, key=args.key, server_name=args.tls_server_name,
            token_file=args.token_file,
        )
        client = Client(args.address, args.timeout, security)
    except SecurityError as error:
        return _fail(str(error))
    try:
        return args.run(client, args)
    except grpc.RpcError as error:
        return _fail(describe_rpc_error(error, client.target, security))
    except CommandError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`ocrctl events | head`): end quietly. Python's
        # recipe: point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        client.close()


def _fail(message: str) -> int:
    sys.stdout.flush()
    print(f"ocrctl: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
