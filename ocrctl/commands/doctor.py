"""``ocrctl doctor``: what serving needs on this host, checked by the daemon as its own user, one
line per check and a fix for each problem; exit status 1 when something blocks serving.

When no daemon answers, that is the first failure, and the same checks run here, in ocrctl, as
the current user: the only place ocrctl imports the daemon's modules (``ocrd.ops.doctor``), because
there is no daemon to ask.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import grpc

from ocrctl.client import START_HINT, Client, CommandError, permission_message
from ocrctl.commands.common import add_command, print_json
from ocrd.control.v1 import control_pb2 as pb

LABELS = {
    pb.CHECK_STATUS_OK: "ok",
    pb.CHECK_STATUS_WARN: "warn",
    pb.CHECK_STATUS_FAIL: "FAIL",
    pb.CHECK_STATUS_SKIPPED: "skip",
}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    doctor = add_command(
        commands, common, "doctor", "check what serving needs on this host, and how to fix it",
        run_doctor,
    )
    doctor.add_argument(
        "--model", default="", metavar="MODEL",
        help="check the GPU memory against this model (default: the daemon's default model)",
    )


def run_doctor(client: Client, args: argparse.Namespace) -> int:
    try:
        answer = client.call("Diagnose", pb.DiagnoseRequest(model=args.model), pb.DiagnoseResponse)
    except grpc.RpcError as error:
        if not _unreachable(error):
            raise
        denied = "Permission denied" in (error.details() or "")
        answer = _local_diagnosis(args.model, client.target, denied=denied)
    if args.json:
        print_json(answer)
    else:
        print(format_checks(answer.checks))
    return 1 if any(check.status == pb.CHECK_STATUS_FAIL for check in answer.checks) else 0


def format_checks(checks: Sequence[pb.Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{LABELS.get(check.status, '?'):<5} {check.name}: {check.message}")
        if check.fix:
            lines.append(f"  fix: {check.fix}")
    return "\n".join(lines)


def _unreachable(error: grpc.RpcError) -> bool:
    """No daemon to ask (nothing listens, or we may not open its socket), as opposed to a
    daemon that answered with an error."""
    if not isinstance(error, grpc.Call) or error.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    return (error.details() or "").startswith("failed to connect to all addresses")


def _local_diagnosis(model: str, target: str, *, denied: bool) -> pb.DiagnoseResponse:
    # Only here does ocrctl import the daemon's code: there is no daemon to ask.
    from ocrd.control.convert import diagnosis
    from ocrd.errors import OcrdError
    from ocrd.ops.doctor import local_checks
    from ocrd.ops.doctor.base import user_name

    try:
        checks = diagnosis(local_checks(model))
    except OcrdError as exc:
        raise CommandError(exc.message) from None
    here = f"the checks below ran in ocrctl as {user_name()} (uid {os.getuid()}), not as ocrd"
    if denied:
        message, fix = f"this user may not talk to ocrd at {target}", permission_message(target)
    else:
        message, fix = f"ocrd is not running at {target}", START_HINT
    daemon = pb.Check(name="daemon", status=pb.CHECK_STATUS_FAIL, message=f"{message}; {here}", fix=fix)
    return pb.DiagnoseResponse(checks=[daemon, *checks.checks])
