"""sd_notify and the watchdog (ocrd.systemd), against a real SOCK_DGRAM socket standing in for
systemd's notification socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocrd.systemd import SYSTEMD_VARIABLES, Notifier, run_watchdog, watchdog_interval

# A safety net so that a missing datagram fails the test instead of hanging it; never asserted on.
SAFETY_TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def no_systemd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the same under a systemd unit: none of its variables leak in."""
    for name in SYSTEMD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket, named by $NOTIFY_SOCKET, like systemd's."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(SAFETY_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield server


def receive(server: socket.socket) -> list[str]:
    return server.recv(65536).decode().split("\n")


def assert_nothing_more(server: socket.socket) -> None:
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(65536)


# --- notifications ------------------------------------------------------------------------------


def test_ready_sends_one_datagram_with_ready_status_and_mainpid(
    notify_socket: socket.socket,
) -> None:
    notifier = Notifier()
    assert notifier.enabled

    notifier.ready("x")

    lines = receive(notify_socket)
    assert "READY=1" in lines
    assert "STATUS=x" in lines
    assert f"MAINPID={os.getpid()}" in lines
    assert_nothing_more(notify_socket)


def test_status_sends_only_the_status_line(notify_socket: socket.socket) -> None:
    Notifier().status("2 models loaded")

    assert receive(notify_socket) == ["STATUS=2 models loaded"]
    assert_nothing_more(notify_socket)


def test_stopping_sends_stopping_and_status(notify_socket: socket.socket) -> None:
    Notifier().stopping("draining")

    lines = receive(notify_socket)
    assert "STOPPING=1" in lines
    assert "STATUS=draining" in lines
    assert "READY=1" not in lines


def test_reloading_sends_reloading_with_the_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    Notifier().reloading()

    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = receive(notify_socket)
    assert "RELOADING=1" in lines
    [usec] = [line.split("=", 1)[1] for line in lines if line.startswith("MONOTONIC_USEC=")]
    assert before <= int(usec) <= after


def test_each_call_is_its_own_datagram(notify_socket: socket.socket) -> None:
    notifier = Notifier()

    notifier.reloading()
    notifier.ready("reloaded")

    assert "RELOADING=1" in receive(notify_socket)
    assert "READY=1" in receive(notify_socket)
    assert_nothing_more(notify_socket)


def test_abstract_namespace_socket_works(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ocrd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(SAFETY_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        Notifier().ready("abstract")

        lines = receive(server)
    assert "READY=1" in lines
    assert "STATUS=abstract" in lines


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))  # exists, but nobody names it

        notifier = Notifier()
        notifier.ready("x")
        notifier.status("y")
        notifier.reloading()
        notifier.stopping("z")
        notifier.send("WATCHDOG=1")

        assert not notifier.enabled
        assert_nothing_more(server)


def test_notify_socket_that_does_not_exist_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))

    notifier = Notifier()
    notifier.ready("x")
    notifier.stopping("y")

    assert notifier.enabled  # it was asked to notify: the datagrams are lost, nothing raised
    assert list(tmp_path.iterdir()) == []  # and nothing was created in the socket's place


# --- the watchdog -------------------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec_in_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")

    assert watchdog_interval() == pytest.approx(1.5)


def test_watchdog_interval_is_none_when_unset() -> None:
    assert watchdog_interval() is None


def test_watchdog_interval_applies_when_watchdog_pid_is_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    assert watchdog_interval() == pytest.approx(10.0)


def test_watchdog_interval_is_none_when_watchdog_pid_is_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))

    assert watchdog_interval() is None


def test_watchdog_interval_is_none_with_a_warning_when_not_a_number(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "soon")

    with caplog.at_level(logging.WARNING, logger="ocrd.systemd"):
        assert watchdog_interval() is None

    [record] = [r for r in caplog.records if r.name == "ocrd.systemd"]
    assert record.levelno == logging.WARNING
    assert "soon" in record.getMessage()


async def test_run_watchdog_pings_repeatedly_until_cancelled(
    notify_socket: socket.socket,
) -> None:
    notify_socket.setblocking(False)
    loop = asyncio.get_running_loop()
    pinger = asyncio.create_task(run_watchdog(Notifier(), 0.01))
    try:
        pings = [
            await asyncio.wait_for(loop.sock_recv(notify_socket, 65536), SAFETY_TIMEOUT)
            for _ in range(4)
        ]
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger

    assert pings == [b"WATCHDOG=1"] * 4
    assert pinger.cancelled()
