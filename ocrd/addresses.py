"""Where the control plane listens by default, and what a TCP address means.

Shared by the daemon (which binds it) and ocrctl (which dials it), so that both always agree;
both also use :func:`is_loopback_host` — the daemon to refuse a plaintext listener off loopback,
ocrctl to refuse sending a token in plaintext off loopback. ocrctl may import this module and
the generated stubs, nothing else of the daemon.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

ENV_ADDRESS = "OCRD_ADDRESS"


def default_runtime_dir() -> Path:
    """``/run/ocrd`` for root (systemd's RuntimeDirectory), else ``$XDG_RUNTIME_DIR/ocrd``, else
    ``/tmp/ocrd-UID`` — which the daemon creates 0700, or refuses when another user could write
    it (``ocrd.private_dirs``)."""
    if os.geteuid() == 0:
        return Path("/run/ocrd")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "ocrd"
    return Path(f"/tmp/ocrd-{os.geteuid()}")


def default_state_dir() -> Path:
    """``/var/lib/ocrd`` for root (systemd's StateDirectory; the unit sets OCRD_STATE_DIR to it),
    else ``$XDG_STATE_HOME/ocrd``, else ``~/.local/state/ocrd`` (the XDG default)."""
    if os.geteuid() == 0:
        return Path("/var/lib/ocrd")
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid, ignore it
        return Path(xdg) / "ocrd"
    return Path.home() / ".local" / "state" / "ocrd"


SYSTEM_SOCKET = Path("/run/ocrd/ocrd.sock")  # where the systemd unit puts it


def default_socket_path() -> Path:
    return default_runtime_dir() / "ocrd.sock"


def client_socket_path(system_socket: Path | None = None) -> Path:
    """The socket ocrctl dials when given no address.

    A user's own daemon (``ocrd serve`` in a shell) listens under their runtime directory; the
    system service listens on ``/run/ocrd/ocrd.sock``, which members of the group ``ocrd`` may
    use. The user's own socket wins when it exists; otherwise the system one, when it exists;
    otherwise the user's path, so that the error names what ``ocrd serve`` would bind.
    """
    system_socket = system_socket or SYSTEM_SOCKET
    own = default_socket_path()
    if own.exists() or own == system_socket:
        return own
    return system_socket if system_socket.exists() else own


def to_grpc_target(address: str | os.PathLike[str]) -> str:
    """Turns what a user types (a path, ``unix:///path``, ``host:port``) into a gRPC target."""
    text = os.fspath(address)
    if text.startswith("unix:"):
        return text
    # host:port has a colon and no slash ("localhost:50051", "[::1]:50051"); anything else is a
    # path, relative ones included ("ocrd.sock").
    if ":" in text and "/" not in text:
        return text
    return f"unix://{Path(text).resolve()}"


def split_host_port(text: str) -> tuple[str, int]:
    """``("host", port)`` from ``host:port`` or ``[v6]:port``; ValueError saying what is wrong."""
    host, colon, port_text = text.strip().rpartition(":")
    if not colon or not host or not port_text.isdigit():
        raise ValueError(f"{text!r} is not host:port (e.g. '0.0.0.0:50051' or '[::1]:50051')")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. '[::]:50051'")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{text!r}: the port must be 0-65535")
    return host, port


def is_loopback_host(host: str) -> bool:
    """True only for ``localhost`` and loopback IP addresses. Any other name counts as remote:
    what it resolves to can change, and a wrong guess would expose the control plane."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tcp_host(target: str) -> str | None:
    """The host of a ``host:port`` gRPC target, or None for a Unix socket target."""
    if target.startswith("unix:"):
        return None
    try:
        return split_host_port(target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:"))[0]
    except ValueError:
        return None


def default_address() -> str:
    """What ocrctl dials by default: ``$OCRD_ADDRESS`` when set, else :func:`client_socket_path`."""
    return to_grpc_target(os.environ.get(ENV_ADDRESS) or client_socket_path())
