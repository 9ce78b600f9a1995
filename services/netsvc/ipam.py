"""Addresses on the bridge's subnet: chosen once, allocated round-robin, persisted.

The subnet is the first of a pool that overlaps no address or route of the
host (Docker picks the same way), unless ``--bip`` names one. The choice and
every allocation live in one small JSON file replaced atomically, so an address
is never handed out twice, even across a restart; at start-up
:meth:`Ipam.reconcile` keeps only the addresses of live endpoints. Allocations are
written without fsync (they are on the critical path of ``run``): the durable truth
is the endpoint records (store.py, fsynced), from which reconcile rebuilds them; a
file torn by a power cut is read as empty (nothing in /run survives that either).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from skiff.common.errors import FailedPrecondition
from skiff.common.files import write_json_atomic

log = logging.getLogger(__name__)

VERSION = 1
SUBNET_EXHAUSTED = "SUBNET_EXHAUSTED"
NO_FREE_SUBNET = "NO_FREE_SUBNET"


def default_pool() -> Iterator[IPv4Network]:
    """172.18-31.0.0/16 (172.17 is docker0's), then 10.x and 192.168.x /24s."""
    for second in range(18, 32):
        yield IPv4Network(f"172.{second}.0.0/16")
    for second in range(0, 256):
        yield IPv4Network(f"10.{second}.0.0/24")
    for third in range(0, 256):
        yield IPv4Network(f"192.168.{third}.0/24")


def choose_subnet(in_use: Iterable[IPv4Network], pool: Iterable[IPv4Network] | None = None) -> IPv4Network:
    """The first network of ``pool`` that overlaps nothing in ``in_use``."""
    used = [n for n in in_use if n.prefixlen > 0]  # a default route overlaps everything
    for candidate in pool if pool is not None else default_pool():
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise FailedPrecondition("no free subnet for the bridge: pass --bip", reason=NO_FREE_SUBNET)


def host_networks() -> list[IPv4Network]:
    """Every IPv4 address's network and route destination on the host (netlink, no fork)."""
    from pyroute2 import IPRoute

    nets: list[IPv4Network] = []
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=2):
            nets.append(IPv4Interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}").network)
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get("RTA_DST")
            if dst:
                nets.append(IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
    return nets


class Ipam:
    """One subnet's allocations. Not thread-safe: the endpoint manager's lock serialises calls."""

    def __init__(self, path: Path):
        self.path = path
        self.subnet: IPv4Network | None = None
        self.allocated: dict[str, str] = {}  # address -> container id
        self.last = ""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except ValueError:  # torn by a power cut (written without fsync): rebuilt by reconcile
            log.warning("%s is unreadable: starting from the endpoint records", path)
            return
        if data.get("version") != VERSION:
            raise RuntimeError(f"{path}: unsupported version {data.get('version')!r}")
        self.subnet = IPv4Network(data["subnet"]) if data.get("subnet") else None
        self.allocated = dict(data.get("allocated", {}))
        self.last = data.get("last", "")

    @property
    def gateway(self) -> IPv4Address:
        assert self.subnet is not None
        return self.subnet.network_address + 1

    def set_subnet(self, subnet: IPv4Network) -> None:
        if subnet != self.subnet:
            if self.allocated:
                raise FailedPrecondition(f"cannot move the bridge to {subnet}: addresses of "
                                         f"{self.subnet} are in use", reason="SUBNET_IN_USE")
            self.subnet, self.last = subnet, ""
            self.save(durable=True)

    def allocate(self, container_id: str) -> IPv4Address:
        """The container's address (the same one if it already has one); round-robin after ``last``."""
        assert self.subnet is not None
        for addr, owner in self.allocated.items():
            if owner == container_id:
                return IPv4Address(addr)
        first = int(self.gateway) + 1
        end = int(self.subnet.broadcast_address)  # exclusive
        size = end - first
        if size <= 0:
            raise FailedPrecondition(f"subnet {self.subnet} has no room", reason=SUBNET_EXHAUSTED)
        start = int(IPv4Address(self.last)) + 1 - first if self.last and IPv4Address(self.last) in self.subnet else 0
        for i in range(size):
            candidate = IPv4Address(first + (start + i) % size)
            if str(candidate) not in self.allocated:
                self.allocated[str(candidate)] = container_id
                self.last = str(candidate)
                self.save()
                return candidate
        raise FailedPrecondition(f"no free address left in {self.subnet}", reason=SUBNET_EXHAUSTED)

    def release(self, address: str) -> None:
        if self.allocated.pop(address, None) is not None:
            self.save()

    def reconcile(self, live: dict[str, str]) -> None:
        """Keep exactly the allocations of live endpoints (address -> container id)."""
        if live != self.allocated:
            self.allocated = dict(live)
            self.save()

    def save(self, durable: bool = False) -> None:
        data = {"version": VERSION, "subnet": str(self.subnet) if self.subnet else "",
                "allocated": self.allocated, "last": self.last}
        write_json_atomic(self.path, data, fsync=durable)


def parse_bip(text: str) -> IPv4Network:
    """``--bip 172.30.0.1/16`` (Docker's form: the gateway's address) or a network ``172.30.0.0/16``."""
    return ipaddress.IPv4Interface(text).network
