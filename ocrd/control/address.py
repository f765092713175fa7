"""Where the control plane listens by default.

Shared by the daemon (which binds it) and ocrctl (which dials it), so that both always agree;
ocrctl may import this module and the generated stubs, nothing else of the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_ADDRESS = "OCRD_ADDRESS"


def default_runtime_dir() -> Path:
    """``/run/ocrd`` for root (systemd's RuntimeDirectory), else ``$XDG_RUNTIME_DIR/ocrd``."""
    if os.geteuid() == 0:
        return Path("/run/ocrd")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "ocrd"
    return Path(f"/tmp/ocrd-{os.geteuid()}")


def default_socket_path() -> Path:
    return default_runtime_dir() / "ocrd.sock"


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


def default_address() -> str:
    """``$OCRD_ADDRESS`` when set, else the default Unix socket."""
    return to_grpc_target(os.environ.get(ENV_ADDRESS) or default_socket_path())
