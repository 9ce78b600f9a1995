"""User-defined networks: each is its own bridge, address pool, iptables chains and DNS.

A network record (``<data-root>/network/networks.json``) becomes a
:class:`UserBridgeDriver` registered with the endpoint manager under the
network's name, so ``run --network NAME`` is an endpoint of mode ``NAME``:

===============  ==============================================================
bridge           ``br-<12 hex digits of the id>`` (as Docker), made at create
addresses        ``ipam-<12 hex>.json``; ``--ip-range`` limits the pool, ``--ip``
                 asks for one address, the gateway (``--gateway``) is never given
iptables         chains ``SK-<12 hex>``, ``SK-<12 hex>-POSTROUTING`` and
                 ``SK-<12 hex>-FORWARD``; ``--internal``: no MASQUERADE, forwarding
                 only between the bridge's own ports, and no default route in
                 the containers
DNS              a socket on 127.0.0.11:53 in each container's namespace (dns.py);
                 it answers the names and aliases of the network's containers
===============  ==============================================================

Changes are checked before anything is made (name in use, subnet overlapping
another network or a host route, gateway or range outside the subnet), so a
refused call changes nothing. At shutdown an unused network's bridge and chains
are removed (the record stays); the bridge is made again on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from skiff.common.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound, SkiffError
from skiff.common.files import write_json_atomic
from skiff.common.prunefilter import PruneFilter
from skiff.netsvc.bridge import BridgeDriver, Release, _in_netns, mac_for
from skiff.netsvc.dns import DNS_PORT, DnsServer
from skiff.netsvc.ipam import Ipam, choose_subnet, host_networks
from skiff.netsvc.iptables import Isolation, Rules
from skiff.netsvc.model import MODE_BRIDGE, MODE_HOST, MODE_NONE, Endpoint, EndpointOptions

if TYPE_CHECKING:
    from skiff.netsvc.manager import EndpointManager

log = logging.getLogger(__name__)

BUILTIN = (MODE_BRIDGE, MODE_HOST, MODE_NONE)
#: An IPv6 address with no duplicate address detection: usable at once (the pool makes it unique).
IFA_F_NODAD = 0x02
VERSION = 1
NETWORK_NOT_FOUND = "NETWORK_NOT_FOUND"
NETWORK_IN_USE = "NETWORK_IN_USE"
INVALID_NETWORK = "INVALID_NETWORK"
INVALID_IP = "INVALID_IP"
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")


@dataclass(frozen=True)
class NetworkRecord:
    id: str
    name: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    driver: str = "bridge"
    #: ``--ipv6``: the IPv6 subnet and the bridge's address in it (empty: IPv4 only).
    ipv6_subnet: str = ""
    ipv6_gateway: str = ""

    @property
    def bridge(self) -> str:
        return "br-" + self.id[:12]


@dataclass(frozen=True)
class NetworkInfo:
    """A network as ``network ls`` / ``inspect`` show it, with its live endpoints."""

    record: NetworkRecord
    bridge: str
    endpoints: tuple[Endpoint, ...] = ()


def builtin_id(name: str) -> str:
    return hashlib.sha256(f"skiff-builtin-network:{name}".encode()).hexdigest()


class NetworkStore:
    """The records, one JSON file replaced atomically (as store.py)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, NetworkRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        if data.get("version") != VERSION:
            raise RuntimeError(f"{self.path}: unsupported version {data.get('version')!r}")
        return {n["id"]: NetworkRecord(**n) for n in data["networks"]}

    def save(self, records: dict[str, NetworkRecord]) -> None:
        data = {"version": VERSION, "networks": [asdict(r) for _, r in sorted(records.items())]}
        write_json_atomic(self.path, data)


class NetIpam(Ipam):
    """A user network's pool: a chosen gateway, an optional range, and ``--ip``."""

    def __init__(self, path: Path, subnet: IPv4Network, gateway: IPv4Address, ip_range: IPv4Network | None):
        super().__init__(path)
        self._gateway = gateway
        self.ip_range = ip_range
        if self.subnet != subnet:  # a new network reusing an old file's name: start afresh
            self.reset(subnet)

    def reset(self, subnet: IPv4Network) -> None:
        self.subnet = subnet
        self.allocated.clear()
        self.last = ""

    @property
    def gateway(self) -> IPv4Address:
        return self._gateway

    def allocate(self, container_id: str, want: str = "") -> IPv4Address:
        assert self.subnet is not None
        for addr, owner in self.allocated.items():
            if owner == container_id:
                return IPv4Address(addr)
        if want:
            ip = _address(want, "--ip")
            if ip not in self.subnet or ip in (self.gateway, self.subnet.network_address,
                                                self.subnet.broadcast_address):
                raise InvalidArgument(f"invalid address {ip}: not a free host address of {self.subnet}",
                                      reason=INVALID_IP)
            if str(ip) in self.allocated:
                raise FailedPrecondition(f"Address already in use: {ip}", reason="ADDRESS_IN_USE")
            self.allocated[str(ip)] = container_id
            self.save()
            return ip
        pool = self.ip_range or self.subnet
        first, end = int(pool.network_address) + 1, int(pool.broadcast_address)
        size = end - first
        start = int(IPv4Address(self.last)) + 1 - first if self.last and IPv4Address(self.last) in pool else 0
        for i in range(max(size, 0)):
            candidate = IPv4Address(first + (start + i) % size)
            if str(candidate) not in self.allocated and candidate != self.gateway:
                self.allocated[str(candidate)] = container_id
                self.last = str(candidate)
                self.save()
                return candidate
        raise FailedPrecondition(f"no free address left in {pool}", reason="SUBNET_EXHAUSTED")


class InternalRules(Rules):
    """An ``--internal`` network: forwarding only between the bridge's own ports, no NAT out."""

    def render(self, subnet: str, endpoints: Iterable[Endpoint], nat_only: bool = False) -> str:
        br = self.bridge
        out = []
        for line in super().render(subnet, endpoints, nat_only).splitlines():
            if line.startswith(f"-A {self.post} "):
                continue
            if line == f"-A {self.fwd} -o {br} -j ACCEPT":
                out += [f"-A {self.fwd} -i {br} -o {br} -j ACCEPT", f"-A {self.fwd} -i {br} -j DROP",
                        f"-A {self.fwd} -o {br} -j DROP"]
                continue
            if line == f"-A {self.fwd} -i {br} -j ACCEPT":
                continue
            out.append(line)
        return "\n".join(out) + "\n"


class UserBridgeDriver(BridgeDriver):
    """The bridge driver of one user network, registered under the network's name."""

    embedded_dns = True

    def __init__(self, netns_dir: Path, state_dir: Path, record: NetworkRecord, dns: DnsServer | None,
                 isolation: Isolation | None = None):
        subnet = IPv4Network(record.subnet)
        super().__init__(netns_dir, state_dir, record.bridge, subnet, chain_prefix=f"SK-{record.id[:12]}",
                         isolation=isolation)
        self.mode = record.name
        self.record = record
        self.internal = record.internal
        self.dns = dns
        self.ipam_path = state_dir / f"ipam-{record.id[:12]}.json"
        self.ipam = NetIpam(self.ipam_path, subnet, IPv4Address(record.gateway),
                            IPv4Network(record.ip_range) if record.ip_range else None)
        if record.internal:
            self.rules = InternalRules(record.bridge, f"SK-{record.id[:12]}", self.isolation)
        self.v6net = IPv6Network(record.ipv6_subnet) if record.ipv6_subnet else None
        self.has_inside_config = self.v6net is not None

    # --- IPv6 (``--ipv6``): each container's IPv6 address is the subnet's address with the same
    # host part as its IPv4 address, so it needs no pool of its own and is unique as that one is.

    def v6_of(self, ip: IPv4Address) -> IPv6Address:
        assert self.v6net is not None and self.ipam.subnet is not None
        return self.v6net.network_address + (int(ip) - int(self.ipam.subnet.network_address))

    def _ensure_bridge(self) -> None:
        if self._ready:
            return
        super()._ensure_bridge()
        if self.v6net is None:
            return
        gw6 = self.v6_of(self.ipam.gateway)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.bridge)[0]
            have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=10)}
            if str(gw6) not in have:
                ipr.addr("add", index=idx, address=str(gw6), prefixlen=self.v6net.prefixlen, flags=IFA_F_NODAD)

    def _configure_inside(self, ipr: IPRoute, index: int, ip: IPv4Address, default_route: bool) -> None:
        if self.v6net is None:
            return
        ipr.addr("add", index=index, address=str(self.v6_of(ip)), prefixlen=self.v6net.prefixlen, flags=IFA_F_NODAD)
        if default_route:
            ipr.route("add", dst="::/0", gateway=str(self.v6_of(self.ipam.gateway)), family=10)

    def _with_v6(self, endpoint: Endpoint) -> Endpoint:
        if self.v6net is None or not endpoint.ip_address:
            return endpoint
        return dataclasses.replace(endpoint, ipv6_address=str(self.v6_of(IPv4Address(endpoint.ip_address))),
                                   ipv6_prefix_length=self.v6net.prefixlen,
                                   ipv6_gateway=str(self.v6_of(self.ipam.gateway)))

    def _allocate(self, container_id: str, opts: EndpointOptions) -> IPv4Address:
        assert isinstance(self.ipam, NetIpam)
        return self.ipam.allocate(container_id, opts.ip_address)

    def names(self, container_id: str, opts: EndpointOptions) -> tuple[str, ...]:
        out = [opts.container_name, *opts.aliases, container_id[:12]]
        return tuple(dict.fromkeys(n.lower() for n in out if n))

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        opts = opts or EndpointOptions()
        endpoint = super().create_endpoint(container_id, opts)
        endpoint = self._with_v6(dataclasses.replace(endpoint, aliases=self.names(container_id, opts),
                                                     dns_servers=tuple(opts.dns)))
        self.endpoints[container_id] = endpoint
        try:
            self._serve_dns(endpoint)
        except BaseException:
            self.delete_endpoint(endpoint)
            raise
        return endpoint

    #: Set by :class:`Networks`: the resolver of a container (every network it is on).
    resolver_for: Callable[[str], Callable[[str], list[str] | None]] | None = None

    def _serve_dns(self, endpoint: Endpoint) -> None:
        if self.dns is not None:
            resolve = self.resolver_for(endpoint.container_id) if self.resolver_for else self.lookup
            upstreams = [(server, DNS_PORT) for server in endpoint.dns_servers]
            self.dns.attach(endpoint.container_id, endpoint.netns_path, resolve, upstreams)

    def attach(self, container_id: str, netns_path: str, ifname: str, opts: EndpointOptions) -> Endpoint:
        """One more interface ``ifname`` in an existing namespace (network connect): no default route."""
        self._ensure_bridge()
        assert self.ipam.subnet is not None
        prefixlen = self.ipam.subnet.prefixlen
        ip = self._allocate_address(container_id, opts)
        veth = "veth" + secrets.token_hex(4)[:7]
        mac = mac_for(ip)
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as ipr:
                    master = ipr.link_lookup(ifname=self.bridge)[0]
                    ipr.link("add", ifname=veth, kind="veth", peer={"ifname": ifname, "net_ns_fd": fd, "address": mac})
                    ipr.link("set", index=ipr.link_lookup(ifname=veth)[0], master=master, state="up")
            finally:
                os.close(fd)

            def inside(ipr: IPRoute) -> None:
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.addr("add", index=idx, address=str(ip), prefixlen=prefixlen)
                ipr.link("set", index=idx, state="up")
                self._configure_inside(ipr, idx, ip, default_route=False)

            _in_netns(netns_path, inside)
        except BaseException as err:
            self._del_link(veth)
            self.ipam.release(str(ip))
            if isinstance(err, (NetlinkError, OSError)):
                raise Internal(f"cannot connect {container_id} to {self.mode}: {err}") from err
            raise
        endpoint = self._with_v6(Endpoint(
            container_id, self.mode, netns_path, ip_address=str(ip), prefix_length=prefixlen,
            gateway=str(self.ipam.gateway), mac_address=mac, bridge=self.bridge, veth=veth,
            aliases=self.names(container_id, opts)))
        self.endpoints[container_id] = endpoint
        return endpoint

    def detach(self, endpoint: Endpoint) -> None:
        """Undo :meth:`attach`. Idempotent."""
        self.endpoints.pop(endpoint.container_id, None)
        self._del_link(endpoint.veth)
        self.ipam.release(endpoint.ip_address)

    def begin_detach(self, endpoint: Endpoint) -> Release:
        """The first half of :meth:`detach` when the container's namespace goes too: the veth and
        the address are given back by :meth:`complete` (see BridgeDriver.begin_delete)."""
        self.endpoints.pop(endpoint.container_id, None)
        return self._hold(endpoint)

    def lookup(self, name: str) -> list[str] | None:
        """The addresses of ``name`` on this network, IPv4 and IPv6 (None: not one of its names)."""
        name = name.rstrip(".").lower()
        for _ in range(3):  # the dict may change under the DNS thread; try again
            try:
                found = [a for e in list(self.endpoints.values()) if name in e.aliases
                         for a in (e.ip_address, e.ipv6_address) if a]
                break
            except RuntimeError:
                continue
        else:
            return None
        return found or None

    def begin_delete(self, endpoint: Endpoint) -> Release:
        if self.dns is not None:
            self.dns.detach(endpoint.container_id)  # its socket holds the namespace
        return super().begin_delete(endpoint)

    def restore(self, endpoints: list[Endpoint]) -> None:
        super().restore(endpoints)
        for e in endpoints:
            try:
                self._serve_dns(e)
            except OSError as err:
                log.warning("no embedded DNS for %s: %s", e.container_id, err)

    def remove(self) -> None:
        """Remove the bridge, its chains and its address file (no endpoint is left)."""
        self.settle()
        self._teardown()
        self.ipam_path.unlink(missing_ok=True)


def _address(text: str, what: str) -> IPv4Address:
    try:
        ip = ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: not an IPv4 address", reason=INVALID_NETWORK) from None
    if not isinstance(ip, IPv4Address):
        raise InvalidArgument(f"invalid {what} {text!r}: only IPv4 is supported", reason=INVALID_NETWORK)
    return ip


def _network(text: str, what: str) -> IPv4Network:
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: want an IPv4 CIDR", reason=INVALID_NETWORK) from None
    if not isinstance(net, IPv4Network):
        raise InvalidArgument(f"invalid {what} {text!r}: only IPv4 is supported", reason=INVALID_NETWORK)
    if net.prefixlen > 30:
        raise InvalidArgument(f"invalid {what} {text!r}: too small (at most /30)", reason=INVALID_NETWORK)
    return net


class Networks:
    """The network calls of netsvc, over the endpoint manager's drivers and lock."""

    def __init__(self, manager: EndpointManager, netns_dir: Path, state_dir: Path, dns: DnsServer | None,
                 in_use: Callable[[], list[IPv4Network]] = host_networks):
        self.manager = manager
        self.netns_dir = netns_dir
        self.state_dir = state_dir
        self.dns = dns
        self.in_use = in_use
        self.store = NetworkStore(state_dir / "networks.json")
        self.records = self.store.load()
        #: ``network connect``: (container id, network name) -> (interface, endpoint).
        self.attach_path = state_dir / "attachments.json"
        #: What each connect asked for (network, name, aliases, --ip): made again after a release.
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}
        #: Stopped containers' connections (container id -> requests), made again at their next start.
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.attachments = self._load_attachments()
        for rec in self.records.values():
            manager.drivers[rec.name] = self._driver_for(rec)

    def _driver_for(self, rec: NetworkRecord) -> UserBridgeDriver:
        default = self.manager.drivers.get(MODE_BRIDGE)
        isolation = default.isolation if isinstance(default, BridgeDriver) else None
        driver = UserBridgeDriver(self.netns_dir, self.state_dir, rec, self.dns, isolation)
        driver.resolver_for = self._resolver_for
        if isinstance(default, BridgeDriver):
            driver.pool = default.pool  # the namespaces made ahead of time, shared
        return driver

    def _resolver_for(self, container_id: str) -> Callable[[str], list[str] | None]:
        """Names of every user network the container is on (its own and those connected)."""

        def resolve(name: str) -> list[str] | None:
            for d in list(self.manager.drivers.values()):
                if isinstance(d, UserBridgeDriver) and container_id in d.endpoints:
                    found = d.lookup(name)
                    if found:
                        return found
            return None

        return resolve

    # --- network connect / disconnect (the caller holds the manager's lock) ----------

    def _load_attachments(self) -> dict[tuple[str, str], tuple[str, Endpoint]]:
        from skiff.netsvc.store import _endpoint

        try:
            data = json.loads(self.attach_path.read_text())
        except FileNotFoundError:
            return {}
        self.pending = {cid: list(reqs) for cid, reqs in data.get("pending", {}).items()}
        out = {}
        for a in data["attachments"]:
            key = (a["endpoint"]["container_id"], a["endpoint"]["network_mode"])
            out[key] = (a["ifname"], _endpoint(a["endpoint"]))
            self.requests[key] = a.get("request") or {"network": key[1]}
        return out

    def _save_attachments(self) -> None:
        self.attach_path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION,
                "attachments": [{"ifname": i, "endpoint": asdict(e), "request": self.requests.get(k, {})}
                                for k, (i, e) in sorted(self.attachments.items())],
                "pending": self.pending}
        tmp = self.attach_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.attach_path)

    def connect(self, network: str, container_id: str, opts: EndpointOptions) -> Endpoint:
        with self.manager._lock:
            return self._connect(network, container_id, opts)

    def _connect(self, network: str, container_id: str, opts: EndpointOptions) -> Endpoint:
        rec = self._find(network)
        if rec is None:
            raise FailedPrecondition(f"connecting to the built-in network {network} is not supported",
                                     reason="BUILTIN_NETWORK")
        primary = self.manager._endpoints.get(container_id)
        if primary is None or not primary.netns_path or primary.network_mode.startswith("container:"):
            raise FailedPrecondition(f"container {container_id[:12]} is not running in a namespace of its own",
                                     reason="CONTAINER_NOT_RUNNING")
        if primary.network_mode == rec.name or (container_id, rec.name) in self.attachments:
            raise AlreadyExists(f"endpoint with name {opts.container_name or container_id[:12]} already "
                                f"exists in network {rec.name}", reason="ENDPOINT_EXISTS")
        used = {i for (cid, _), (i, _) in self.attachments.items() if cid == container_id}
        ifname = next(f"eth{n}" for n in range(1, 1000) if f"eth{n}" not in used)
        endpoint = self._user(rec.name).attach(container_id, primary.netns_path, ifname, opts)
        self.attachments[(container_id, rec.name)] = (ifname, endpoint)
        self.requests[(container_id, rec.name)] = {
            "network": rec.name, "container_name": opts.container_name, "aliases": list(opts.aliases),
            "ip_address": opts.ip_address}
        self._save_attachments()
        return endpoint

    def reattach(self, container_id: str) -> None:
        """The container starts again: make the connections it had when it stopped (best effort)."""
        reqs = self.pending.pop(container_id, None)
        if reqs is None:
            return
        for r in reqs:
            opts = EndpointOptions(container_name=r.get("container_name", ""), aliases=tuple(r.get("aliases", ())),
                                   ip_address=r.get("ip_address", ""))
            try:
                self._connect(r["network"], container_id, opts)
            except SkiffError as err:
                log.warning("container %s not connected again to %s: %s", container_id[:12], r["network"], err)
        self._save_attachments()

    def forget(self, container_id: str) -> None:
        """The container is removed: drop the connections kept for its next start."""
        if self.pending.pop(container_id, None) is not None:
            self._save_attachments()

    def disconnect(self, network: str, container_id: str) -> None:
        with self.manager._lock:
            rec = self._find(network)
            name = rec.name if rec is not None else network
            entry = self.attachments.get((container_id, name))
            if entry is None:
                raise FailedPrecondition(f"container {container_id[:12]} is not connected to network {network} "
                                         "(by network connect)", reason="NOT_CONNECTED")
            self._user(name).detach(entry[1])
            del self.attachments[(container_id, name)]
            self.requests.pop((container_id, name), None)
            self._save_attachments()

    def detach_all(self, container_id: str, keep: bool = False,
                   defer: Callable[[UserBridgeDriver, Release], None] | None = None) -> None:
        """The container's endpoint is going: its connected interfaces go with it.

        ``keep`` (the container stopped): remember what they asked for, for :meth:`reattach`.
        ``defer``: take each interface's deletion in two halves and hand the second to it.
        """
        keys = [k for k in self.attachments if k[0] == container_id]
        for key in keys:
            driver = self.manager.drivers.get(key[1])
            if isinstance(driver, UserBridgeDriver):
                if defer is not None:
                    defer(driver, driver.begin_detach(self.attachments[key][1]))
                else:
                    driver.detach(self.attachments[key][1])
            del self.attachments[key]
            request = self.requests.pop(key, None) or {"network": key[1]}
            if keep:
                self.pending.setdefault(container_id, []).append(request)
        dropped = not keep and self.pending.pop(container_id, None) is not None
        if keys or dropped:  # (a rewrite on every delete would cost every `run --rm` ~0.5 ms)
            self._save_attachments()

    def live_attachments(self, live: set[str]) -> dict[str, list[Endpoint]]:
        """At start-up: drop attachments whose container or network is gone; the rest by network."""
        out: dict[str, list[Endpoint]] = {}
        for key, (_, e) in list(self.attachments.items()):
            if key[0] not in live or not isinstance(self.manager.drivers.get(key[1]), UserBridgeDriver):
                del self.attachments[key]
                self.requests.pop(key, None)
                continue
            out.setdefault(key[1], []).append(e)
        self._save_attachments()
        return out

    def _user(self, name: str) -> UserBridgeDriver:
        d = self.manager.drivers[name]
        assert isinstance(d, UserBridgeDriver)
        return d

    # --- reading -----------------------------------------------------------------

    def _builtin(self, name: str) -> NetworkInfo:
        subnet = gateway = bridge = ""
        driver = {"bridge": "bridge", "host": "host", "none": "null"}[name]
        if name == MODE_BRIDGE:
            d = self.manager.drivers.get(MODE_BRIDGE)
            if isinstance(d, BridgeDriver):
                bridge = d.bridge
                if d.ipam.subnet is not None:
                    subnet, gateway = str(d.ipam.subnet), str(d.ipam.gateway)
        rec = NetworkRecord(builtin_id(name), name, subnet, gateway, driver=driver)
        return NetworkInfo(rec, bridge, self._endpoints_of(name))

    def _endpoints_of(self, name: str) -> tuple[Endpoint, ...]:
        attached = [e for (_, n), (_, e) in sorted(self.attachments.items()) if n == name]
        return tuple(e for e in self.manager.list_endpoints() if e.network_mode == name) + tuple(attached)

    def list_networks(self) -> list[NetworkInfo]:
        out = [self._builtin(n) for n in BUILTIN]
        with self.manager._lock:
            recs = sorted(self.records.values(), key=lambda r: r.name)
        out += [NetworkInfo(r, r.bridge, self._endpoints_of(r.name)) for r in recs]
        return out

    def _find(self, ref: str) -> NetworkRecord | None:
        """A user network by name, full id or unique id prefix; None for a built-in one."""
        if ref in BUILTIN or ref in (builtin_id(n) for n in BUILTIN):
            return None
        for r in self.records.values():
            if ref in (r.name, r.id):
                return r
        found = [r for r in self.records.values() if ref and r.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found)",
                                  reason="AMBIGUOUS_NETWORK")
        raise NotFound(f"network {ref} not found", reason=NETWORK_NOT_FOUND)

    def inspect(self, ref: str) -> NetworkInfo:
        with self.manager._lock:
            rec = self._find(ref)
        if rec is None:
            name = ref if ref in BUILTIN else next(n for n in BUILTIN if builtin_id(n) == ref)
            return self._builtin(name)
        return NetworkInfo(rec, rec.bridge, self._endpoints_of(rec.name))

    # --- changes -------------------------------------------------------------------

    def create(self, name: str, subnet: str = "", gateway: str = "", ip_range: str = "",
               internal: bool = False, labels: dict[str, str] | None = None, enable_ipv6: bool = False,
               ipv6_subnet: str = "") -> NetworkInfo:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"invalid network name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                                  reason=INVALID_NETWORK)
        with self.manager._lock:
            if name in BUILTIN or name in self.manager.drivers or any(r.name == name for r in self.records.values()):
                raise AlreadyExists(f"network with name {name} already exists", reason="NETWORK_EXISTS")
            taken = [IPv4Network(r.subnet) for r in self.records.values()]
            default = self.manager.drivers.get(MODE_BRIDGE)
            if isinstance(default, BridgeDriver) and default.ipam.subnet is not None:
                taken.append(default.ipam.subnet)
            if subnet:
                net = _network(subnet, "subnet")
                clash = [t for t in taken if t.overlaps(net)]
                clash += [h for h in self.in_use() if h.prefixlen > 0 and h.overlaps(net)]
                if clash:
                    raise InvalidArgument(f"invalid pool request: Pool overlaps with other one on this "
                                          f"address space ({net} overlaps {clash[0]})", reason="POOL_OVERLAPS")
            else:
                if gateway or ip_range:
                    raise InvalidArgument("--gateway and --ip-range need --subnet", reason=INVALID_NETWORK)
                net = choose_subnet([*taken, *self.in_use()])
            gw = _address(gateway, "gateway") if gateway else net.network_address + 1
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise InvalidArgument(f"invalid gateway {gw}: not a host address of subnet {net}",
                                      reason=INVALID_NETWORK)
            rng = _network(ip_range, "ip-range") if ip_range else None
            if rng is not None and not rng.subnet_of(net):
                raise InvalidArgument(f"invalid ip-range {rng}: not inside subnet {net}", reason=INVALID_NETWORK)
            net6 = self._ipv6_subnet(enable_ipv6, ipv6_subnet, net)
            gw6 = net6.network_address + (int(gw) - int(net.network_address)) if net6 is not None else None
            rec = NetworkRecord(secrets.token_hex(32), name, str(net), str(gw), str(rng) if rng else "",
                                internal, dict(labels or {}), time.time(),
                                ipv6_subnet=str(net6) if net6 is not None else "",
                                ipv6_gateway=str(gw6) if gw6 is not None else "")
            driver = self._driver_for(rec)
            try:
                driver._ensure_bridge()
                self.records[rec.id] = rec
                self.store.save(self.records)
            except BaseException:
                self.records.pop(rec.id, None)
                driver.remove()
                raise
            self.manager.drivers[name] = driver
            log.info("created network %s (%s) on %s", name, rec.id[:12], net)
            return NetworkInfo(rec, rec.bridge)

    def _ipv6_subnet(self, enable: bool, text: str, net: IPv4Network) -> IPv6Network | None:
        """``--ipv6 --subnet fd00:…/64``, checked: room for every IPv4 host part, no overlap, a host
        that does not forward IPv6 (skiff has no ip6tables rules: forwarding would join networks)."""
        if not enable and not text:
            return None
        if not enable or not text:
            raise InvalidArgument("--ipv6 and an IPv6 --subnet (e.g. fd00:1::/64) go together",
                                  reason=INVALID_NETWORK)
        try:
            net6 = ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid subnet {text!r}: want an IPv6 CIDR", reason=INVALID_NETWORK) from None
        if not isinstance(net6, IPv6Network):
            raise InvalidArgument(f"invalid IPv6 subnet {text!r}", reason=INVALID_NETWORK)
        if net6.max_prefixlen - net6.prefixlen < net.max_prefixlen - net.prefixlen:
            raise InvalidArgument(f"IPv6 subnet {net6} is smaller than the IPv4 subnet {net}", reason=INVALID_NETWORK)
        clash = [r.ipv6_subnet for r in self.records.values()
                 if r.ipv6_subnet and IPv6Network(r.ipv6_subnet).overlaps(net6)]
        if clash:
            raise InvalidArgument(f"invalid pool request: Pool overlaps with other one on this address space "
                                  f"({net6} overlaps {clash[0]})", reason="POOL_OVERLAPS")
        for key, bad, why in (("all/disable_ipv6", "1", "IPv6 is disabled on this host"),
                              ("all/forwarding", "1", "this host forwards IPv6, and skiff has no ip6tables "
                                                      "rules to keep networks apart")):
            try:
                value = Path(f"/proc/sys/net/ipv6/conf/{key}").read_text().strip()
            except OSError:
                value = "1" if key == "all/disable_ipv6" else "0"
            if value == bad:
                raise FailedPrecondition(f"cannot create an IPv6 network: {why}", reason="IPV6_UNAVAILABLE")
        return net6

    def remove(self, ref: str) -> str:
        with self.manager._lock:
            rec = self._find(ref)
            if rec is None:
                raise FailedPrecondition(f"{ref} is a pre-defined network and cannot be removed",
                                         reason="BUILTIN_NETWORK")
            self._remove(rec)
            return rec.id

    def _remove(self, rec: NetworkRecord) -> None:
        users = [cid for cid, e in self.manager._endpoints.items() if e.network_mode == rec.name]
        users += [cid for cid, name in self.attachments if name == rec.name]
        if users:
            raise FailedPrecondition(
                f"error while removing network: network {rec.name} id {rec.id} has active endpoints "
                f"({', '.join(u[:12] for u in users)})", reason=NETWORK_IN_USE)
        self._user(rec.name).remove()
        del self.records[rec.id]
        self.store.save(self.records)
        self.manager.drivers.pop(rec.name, None)
        log.info("removed network %s (%s)", rec.name, rec.id[:12])

    def prune(self, keep: PruneFilter | None = None) -> list[str]:
        """Remove the user networks no container is on (and ``keep``, Docker's prune filters, matches)."""
        removed = []
        with self.manager._lock:
            used = {e.network_mode for e in self.manager._endpoints.values()} | {n for _, n in self.attachments}
            for rec in sorted(self.records.values(), key=lambda r: r.name):
                if keep is not None and not keep.matches(int(rec.created * 10**9), rec.labels):
                    continue
                if rec.name not in used:
                    self._remove(rec)
                    removed.append(rec.name)
        return removed
