"""Machines of their own for tests that need several (tests/integration/test_router.py): one Linux
network namespace per host, all on one bridge, like nodes on a LAN.

``lan(names)`` makes a bridge in this (the test's) namespace with the subnet's first address, and
for each name a namespace with its own loopback and one veth link onto the bridge, at the next
address. A process started with ``host.prefix`` in front of its command (``ip netns exec NS``,
which execs: its PID is the command's) sees only its own loopback and that link, so every host can
bind the same port, and what it advertises must be an address the others reach. The test's own
namespace reaches every host at ``host.address``, and every host reaches it at ``lan.gateway``
(where a test puts a router). Host-to-host traffic is not promised: it crosses the bridge, and
with Docker installed the kernel hands bridged packets to iptables' FORWARD chain, which Docker
sets to DROP.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's ``ip``. ``unavailable()`` says why not,
so a test can fall back to loopback ports; ``OCRD_REQUIRE_NETNS=1`` (set by ``scripts/test`` in
CI) makes the fallback a failure. Everything made is removed at the end, and namespaces left by
a test process that was killed are removed by the next run (their names carry its PID).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

REQUIRE_ENV = "OCRD_REQUIRE_NETNS"
PREFIX = "ocrdt"  # every namespace and link made here: PREFIX<pid>...
_OWN = re.compile(rf"^{PREFIX}(\d+)")
_SUBNETS = ipaddress.ip_network("10.231.0.0/16")  # /24s for test LANs, picked among the free ones


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Put in front of a command to run it on this host."""
        return ["ip", "netns", "exec", self.netns]


@dataclass
class Lan:
    gateway: str  # the test's own address on the LAN
    hosts: dict[str, Host] = field(default_factory=dict)


def unavailable() -> str:
    """Why namespaces cannot be made here ("" when they can)."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return ""


def require_or_skip_reason() -> str:
    """``unavailable()``, or a failure when ``OCRD_REQUIRE_NETNS=1`` and there is a reason."""
    reason = unavailable()
    if reason and os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but network namespaces cannot be made: {reason}")
    return reason


@contextlib.contextmanager
def lan(names: Sequence[str]) -> Iterator[Lan]:
    """The bridge, and a namespace per name on it; all removed at exit."""
    _remove_stale()
    tag = f"{PREFIX}{os.getpid()}"
    subnet = _free_subnet()
    addresses = iter(subnet.hosts())
    bridge = f"{tag}br"
    made: list[str] = []
    try:
        gateway = str(next(addresses))
        _ip("link", "add", bridge, "type", "bridge")
        made.append(bridge)
        _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        network = Lan(gateway)
        for index, name in enumerate(names):
            netns, outside = f"{tag}n{index}", f"{tag}v{index}"
            address = str(next(addresses))
            _ip("netns", "add", netns)
            made.append(netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
            made.append(outside)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("-n", netns, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            network.hosts[name] = Host(name, netns, address)
        yield network
    finally:
        # Links first, by name: a namespace's end would take its veth pair too, but later (the
        # kernel dismantles it in the background), and the next test's link of that name would
        # find it still there.
        for thing in reversed(made):
            _ip("netns" if thing.startswith(tag + "n") else "link", "del", thing, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    taken = [ipaddress.ip_interface(address).network for address in
             re.findall(r"inet (\S+)", _ip("-4", "addr", "show").stdout)]
    start = os.getpid() % 256  # two test runs at once start apart
    candidates = list(_SUBNETS.subnets(new_prefix=24))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise AssertionError(f"no free /24 in {_SUBNETS} for a test network")


def _remove_stale() -> None:
    """Namespaces and bridges of test processes that no longer exist (killed before cleanup)."""
    namespaces = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]
    links = re.findall(rf"^\d+: ({PREFIX}\d+(?:br|v\d+))[:@]", _ip("-o", "link", "show").stdout, re.M)
    for name in namespaces + links:
        owner = _OWN.match(name)
        if owner is None or _alive(int(owner.group(1))):
            continue
        if name in links:
            _ip("link", "del", name, check=False)
        else:
            _ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result
