"""systemd's notify protocol (through ``sdnotify``) and the watchdog.

READY=1 goes out only once HTTP and gRPC are bound; STATUS= says what is loaded; WATCHDOG=1 is
sent from the daemon's event loop itself, so a wedged loop stops the pings and systemd restarts
the service; STOPPING=1 on shutdown; RELOADING=1 ... READY=1 around a SIGHUP reload.
Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import sdnotify

log = logging.getLogger("ocrd.systemd")

# Variables systemd sets for the main process only; runners must not inherit them.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None

    def send(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.01)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None


async def run_watchdog(notifier: Notifier, interval: float) -> None:
    """Pings from the event loop: if the loop wedges, the pings stop and systemd acts."""
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval)
