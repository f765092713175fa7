"""The control plane's gRPC server on its Unix socket, and the TCP listener next to it.

Next to ``ocrd.v1.Control`` it serves the standard ``grpc.health.v1.Health`` and server
reflection (v1 and v1alpha), so grpcurl-style tools and health probes work without our proto.
Calls over the socket are trusted as admin: its mode and group decide who may connect. Remote
callers use ``grpc.listen`` (``ocrd.control.tcp``), where TLS and tokens or client certificates
are required.

The socket is the daemon's identity on the host, so start-up is careful with it: a socket that
another live process answers on is never taken over (two daemons would fight over models and
GPUs); a stale one left by a crash is removed; the mode and group are set before the server
starts accepting, because the group is who may administer ocrd. Its directory must be ocrd's own
and writable by nobody else (``ocrd.private_dirs``), or another user could swap the socket.
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ocrd.config.settings import Settings
from ocrd.control.errors import ErrorInterceptor
from ocrd.control.reflection import enable_reflection
from ocrd.control.tcp import TcpListener, start_tcp_listener
from ocrd.control.v1 import control_pb2, control_pb2_grpc
from ocrd.errors import ConfigError
from ocrd.private_dirs import ensure_control_socket_dir

log = logging.getLogger("ocrd.control")

CONTROL_SERVICE_NAME = control_pb2.DESCRIPTOR.services_by_name["Control"].full_name
# sun_path is 108 bytes on Linux, one of which is the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


@dataclass
class ControlServer:
    server: grpc.aio.Server
    socket_path: Path
    addresses: list[str]
    health: health.aio.HealthServicer
    _socket_identity: tuple[int, int]  # (st_dev, st_ino) of the socket file we created
    tcp: TcpListener | None = None

    async def stop(self, grace: float | None) -> None:
        """Stops serving (in-flight RPCs get ``grace`` seconds) and removes our socket file."""
        await self.health.enter_graceful_shutdown()
        if self.tcp is not None:
            await self.tcp.stop(grace)
        await self.server.stop(grace)
        _remove_if_ours(self.socket_path, self._socket_identity)

    def apply_settings(self, settings: Settings) -> None:
        """SIGHUP: token and client-certificate changes apply to the next TCP call."""
        if self.tcp is not None:
            self.tcp.apply_settings(settings)


async def start_control_server(
    settings: Settings, servicer: control_pb2_grpc.ControlServicer
) -> ControlServer:
    """Binds the control socket and starts serving; ConfigError (one line) when it cannot."""
    path = Path(settings.grpc.socket).absolute()
    _check_path_length(path)
    gid = _group_id(settings.grpc.socket_group)  # before binding: a bad group leaves nothing behind
    _prepare_socket_path(path)

    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    control_pb2_grpc.add_ControlServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    for name in (health.OVERALL_HEALTH, CONTROL_SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, [CONTROL_SERVICE_NAME, health.SERVICE_NAME])

    address = f"unix://{path}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"grpc.socket: cannot listen on {address}: {exc}") from None
    try:
        identity = _set_permissions(path, settings.grpc.socket_mode, gid)
    except ConfigError:
        await server.stop(None)
        path.unlink(missing_ok=True)
        raise
    await server.start()
    log.info("control plane listening on %s (mode %o)", address, settings.grpc.socket_mode)
    try:
        tcp = await start_tcp_listener(settings, servicer, health_servicer,
                                       [CONTROL_SERVICE_NAME, health.SERVICE_NAME])
    except BaseException:
        await server.stop(None)
        _remove_if_ours(path, identity)
        raise
    addresses = [address, *(tcp.addresses if tcp else [])]
    return ControlServer(server, path, addresses, health_servicer, identity, tcp)


def _check_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            f"grpc.socket: {path} is longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket "
            "path may have; choose a shorter path"
        )


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(
            f"grpc.socket_group: group {group!r} does not exist (create it with "
            f"'groupadd --system {group}', or unset grpc.socket_group)"
        ) from None


def _prepare_socket_path(path: Path) -> None:
    """Creates or checks the directory; refuses a live socket or a non-socket; removes a stale
    socket."""
    ensure_control_socket_dir(path)  # serve() checked it too; this is the check at bind time
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"grpc.socket: {path} exists and is not a socket; remove it or choose another path")
    if _answers(path):
        raise ConfigError(
            f"another process (probably ocrd) is already serving on unix://{path}; stop it "
            "('systemctl stop ocrd') or set grpc.socket to another path"
        )
    log.info("removing stale control socket %s", path)
    path.unlink(missing_ok=True)


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the socket (a crashed daemon's does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # its backlog is full: busy, but alive
        except PermissionError:
            raise ConfigError(
                f"grpc.socket: {path} exists and this user may not connect to it, so it cannot "
                "tell whether another ocrd is running there; remove it or choose another path"
            ) from None
        return True


def _set_permissions(path: Path, mode: int, gid: int | None) -> tuple[int, int]:
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        info = os.lstat(path)
    except OSError as exc:
        what = f"group {gid} and mode {mode:o}" if gid is not None else f"mode {mode:o}"
        raise ConfigError(f"grpc.socket: cannot set {what} on {path}: {exc.strerror}") from None
    return info.st_dev, info.st_ino


def _remove_if_ours(path: Path, identity: tuple[int, int]) -> None:
    # A daemon started after us (once we stopped answering) may own the path by now.
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) == identity:
        path.unlink(missing_ok=True)
