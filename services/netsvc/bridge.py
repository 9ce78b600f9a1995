"""``bridge``: a namespace on skiff's bridge, with an address, NAT and published ports.

Per endpoint, in order (undone in reverse on failure)::

    host port checks      nothing changed yet: a refused port leaves no trace
    address (Ipam)        persisted before any kernel object that uses it
    namespace             as the ``none`` driver makes it (lo up); its thread hands
                          back a socket that belongs to it
    veth pair             host end veth<hex> on the bridge, up; the peer is created
                          directly inside the namespace as eth0 with a MAC derived
                          from the address (02:42:<ip>, as Docker) — one RTM_NEWLINK
    inside the namespace  address, eth0 up, default route via the gateway — ioctls
                          on that socket (rtnl.py; netsvc never forks)
    iptables              skiff's chains rewritten from the records (iptables.py),
                          only when the endpoint publishes ports

A delete is done in two halves (see :meth:`BridgeDriver.begin_delete`).

The bridge itself is made on first use: the subnet is ``--bip`` or the first
free one of the pool (ipam.py), the gateway its first address.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from skiff.common.errors import FailedPrecondition, Internal, InvalidArgument
from skiff.netsvc import netns, rtnl
from skiff.netsvc.ipam import Ipam, choose_subnet, host_networks
from skiff.netsvc.iptables import Isolation, Rules
from skiff.netsvc.model import MODE_BRIDGE, Endpoint, EndpointOptions, PortBinding, parse_mac

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "skiff0"
PORT_ALLOCATED = "PORT_ALREADY_ALLOCATED"
INVALID_PORT = "INVALID_PORT"
_libc = ctypes.CDLL(None, use_errno=True)


def mac_for(ip: IPv4Address) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


#: Fault injection for the robustness tests: netsvc SIGKILLs itself at this step of a bridge
#: endpoint's creation (allocated, netns, veth, configured, rules), or in the cleanup thread before
#: it deletes a deleted endpoint's veth (cleanup). Unset in normal use.
CRASH_AT = os.environ.get("SKIFF_NETSVC_CRASH_AT", "")


def crash_point(step: str) -> None:
    if step == CRASH_AT:
        log.critical("SKIFF_NETSVC_CRASH_AT=%s: killing netsvc", step)
        os.kill(os.getpid(), signal.SIGKILL)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _set_sysctl(path: str, value: str) -> bool:
    """Write ``value`` to a /proc/sys file unless it holds it already; whether it changed."""
    with open(path) as f:
        if f.read().strip() == value:
            return False
    _write(path, value)
    return True


def _in_netns(path: str, fn: Callable[[IPRoute], None]) -> None:
    """Run ``fn`` with a netlink socket inside the namespace at ``path``, from a throwaway thread."""
    result: list[BaseException | None] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, netns.CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            with IPRoute() as ipr:
                fn(ipr)
            result.append(None)
        except BaseException as err:
            result.append(err)

    t = threading.Thread(target=body, name="netns-config")
    t.start()
    t.join()
    err = result[0] if result else RuntimeError("netns thread died")
    if err is not None:
        raise err


def parse_exposed(item: str) -> tuple[int, str]:
    port, _, proto = item.partition("/")
    proto = proto or "tcp"
    if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid port {item!r}: want PORT[/tcp|udp]", reason=INVALID_PORT)
    return int(port), proto


def _bind_test(ip: str, port: int, proto: str) -> int:
    """Bind (ip, port) on the host and return the port bound (a free one for 0); OSError if taken."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip or "0.0.0.0", port))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class Release:
    """A deleted endpoint whose veth pair and address the driver has not yet given back."""

    endpoint: Endpoint
    kernel_done: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class BridgeDriver:
    mode = MODE_BRIDGE
    #: No default route in the containers (user networks' ``--internal``).
    internal = False
    #: Namespaces made ahead of time (netns.Pool), shared with the ``none`` driver; None: off.
    pool: netns.Pool | None = None

    def __init__(self, netns_dir: Path, state_dir: Path, bridge: str = DEFAULT_BRIDGE,
                 bip: IPv4Network | None = None, chain_prefix: str = "SKIFF",
                 isolation: Isolation | None = None):
        self.netns_dir = netns_dir
        self.bridge = bridge
        self.bip = bip
        self.ipam = Ipam(state_dir / "ipam.json")
        #: Shared by every bridge of the engine: containers on two of them cannot talk.
        self.isolation = isolation if isolation is not None else Isolation(chain_prefix)
        self.rules = Rules(bridge, chain_prefix, self.isolation)
        self.endpoints: dict[str, Endpoint] = {}
        #: Deleted endpoints whose veth or address is not yet given back (see begin_delete).
        self.releasing: list[Release] = []
        self._ready = False

    # --- the bridge -------------------------------------------------------------

    def _subnet(self) -> IPv4Network:
        if self.bip is not None:
            self.ipam.set_subnet(self.bip)
        elif self.ipam.subnet is None:
            self.ipam.set_subnet(choose_subnet(host_networks()))
        assert self.ipam.subnet is not None
        return self.ipam.subnet

    def _ensure_bridge(self) -> None:
        if self._ready:
            return
        subnet = self._subnet()
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=self.bridge):
                ipr.link("add", ifname=self.bridge, kind="bridge")
            idx = ipr.link_lookup(ifname=self.bridge)[0]
            have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
            if (str(self.ipam.gateway), subnet.prefixlen) not in have:
                ipr.addr("add", index=idx, address=str(self.ipam.gateway), prefixlen=subnet.prefixlen)
            ipr.link("set", index=idx, state="up")
        if _set_sysctl("/proc/sys/net/ipv4/ip_forward", "1") and self.pool is not None:
            self.pool.invalidate()  # a new namespace copies the host's ip_forward when it is made
        _write(f"/proc/sys/net/ipv4/conf/{self.bridge}/route_localnet", "1")
        self._sync_rules()
        self._ready = True
        log.info("bridge %s up on %s", self.bridge, subnet)

    def _teardown(self) -> None:
        self.rules.teardown()
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.bridge):
                ipr.link("del", index=idx)
        self._ready = False

    # --- ports ------------------------------------------------------------------

    def _ports(self, container_id: str, opts: EndpointOptions) -> tuple[PortBinding, ...]:
        """Validated bindings with host ports chosen; refuses a port taken here or on the host."""
        wanted = list(opts.port_bindings)
        if opts.publish_all_ports:
            bound = {(p.container_port, p.protocol or "tcp") for p in wanted}
            for item in opts.exposed_ports:
                port, proto = parse_exposed(item)
                if (port, proto) not in bound:
                    wanted.append(PortBinding("", 0, port, proto))
        taken = {(p.host_ip, p.host_port, p.protocol): cid
                 for cid, e in self.endpoints.items() if cid != container_id for p in e.ports}
        out: list[PortBinding] = []
        for p in wanted:
            proto = p.protocol or "tcp"
            if proto not in ("tcp", "udp") or not 0 < p.container_port < 65536 or not 0 <= p.host_port < 65536:
                raise InvalidArgument(f"invalid port binding {p}", reason=INVALID_PORT)
            ip = "" if p.host_ip in ("", "0.0.0.0") else p.host_ip
            if p.host_port:
                clash = [cid for (tip, tport, tproto), cid in taken.items()
                         if tport == p.host_port and tproto == proto and (not tip or not ip or tip == ip)]
                clash += [f"this container ({b.host_ip or '0.0.0.0'}:{b.host_port})" for b in out
                          if b.host_port == p.host_port and b.protocol == proto
                          and (not b.host_ip or not ip or b.host_ip == ip)]
                if clash:
                    raise FailedPrecondition(
                        f"Bind for {ip or '0.0.0.0'}:{p.host_port} failed: port is already allocated "
                        f"(published by {clash[0][:12]})", reason=PORT_ALLOCATED)
            try:
                host_port = _bind_test(ip, p.host_port, proto)
            except OSError as err:
                if err.errno == errno.EADDRNOTAVAIL:
                    raise InvalidArgument(f"host address {ip} is not an address of this host",
                                          reason=INVALID_PORT) from None
                raise FailedPrecondition(
                    f"Bind for {ip or '0.0.0.0'}:{p.host_port}/{proto} failed: {err.strerror} "
                    f"(the port is in use on the host)", reason=PORT_ALLOCATED) from None
            out.append(PortBinding(ip, host_port, p.container_port, proto))
        return tuple(out)

    # --- the NetworkDriver calls -----------------------------------------------

    def path(self, container_id: str) -> Path:
        return self.netns_dir / container_id

    def create_endpoint(self, container_id: str, opts: EndpointOptions | None = None) -> Endpoint:
        opts = opts or EndpointOptions()
        wanted_mac = parse_mac(opts.mac_address) if opts.mac_address else ""
        ports = self._ports(container_id, opts)
        self._ensure_bridge()
        assert self.ipam.subnet is not None
        subnet, gateway = self.ipam.subnet, self.ipam.gateway
        undo: list[Callable[[], None]] = []
        try:
            ip = self._allocate_address(container_id, opts)
            undo.append(lambda: self.ipam.release(str(ip)))
            crash_point("allocated")
            netns.ensure_mount_point(self.netns_dir)
            path = self.path(container_id)
            sock = netns.create(path, keep_socket=True, pool=self.pool)
            assert sock is not None
            undo.append(lambda: netns.remove(path))
            with sock:
                crash_point("netns")
                veth = "veth" + secrets.token_hex(4)[:7]
                mac = wanted_mac or mac_for(ip)
                undo.append(lambda: self._del_link(veth))
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # One request: the pair, the host end on the bridge, both ends up, eth0 in the namespace.
                    rtnl.add_veth(veth, self._bridge_index(), "eth0", fd, mac)
                finally:
                    os.close(fd)
                crash_point("veth")
                # Address, netmask and default route: ioctls on a socket of the namespace.
                rtnl.configure(sock, "eth0", ip, subnet.prefixlen, None if self.internal else gateway)
            if self.has_inside_config:
                def inside(ipr: IPRoute) -> None:
                    self._configure_inside(ipr, ipr.link_lookup(ifname="eth0")[0], ip,
                                           default_route=not self.internal)

                _in_netns(str(path), inside)
            crash_point("configured")
            endpoint = Endpoint(container_id, self.mode, str(path), ip_address=str(ip),
                                prefix_length=subnet.prefixlen, gateway=str(gateway), mac_address=mac,
                                bridge=self.bridge, veth=veth, ports=ports)
            self.endpoints[container_id] = endpoint
            undo.append(lambda: self._forget(container_id))
            if ports:
                self._sync_rules(nat_only=True)
            crash_point("rules")
            return endpoint
        except BaseException as err:
            for step in reversed(undo):
                try:
                    step()
                except Exception as undo_err:  # keep undoing; report the first error
                    log.warning("undo after failed bridge endpoint of %s: %s", container_id, undo_err)
            if isinstance(err, (NetlinkError, OSError)):
                raise Internal(f"cannot create bridge endpoint for {container_id}: {err}") from err
            raise

    def _bridge_index(self) -> int:
        """The bridge's interface index (made again, with its rules, if it was removed behind our back)."""
        try:
            return socket.if_nametoindex(self.bridge)
        except OSError:
            self._ready = False
            self._ensure_bridge()
            return socket.if_nametoindex(self.bridge)

    def _sync_rules(self, nat_only: bool = False) -> None:
        assert self.ipam.subnet is not None
        self.rules.sync(str(self.ipam.subnet), self.endpoints.values(), nat_only=nat_only)

    def _allocate_address(self, container_id: str, opts: EndpointOptions) -> IPv4Address:
        """An address; if none is free (or ``--ip``'s is still held by a deleted endpoint's interface),
        first finish the deletions in progress."""
        try:
            return self._allocate(container_id, opts)
        except FailedPrecondition:
            if not self.releasing:
                raise
            self.settle()
            return self._allocate(container_id, opts)

    def _allocate(self, container_id: str, opts: EndpointOptions) -> IPv4Address:
        return self.ipam.allocate(container_id)

    #: Whether :meth:`_configure_inside` does anything (it needs a thread in the namespace).
    has_inside_config = False

    def _configure_inside(self, ipr: IPRoute, index: int, ip: IPv4Address, default_route: bool) -> None:
        """More set-up of the container's interface, inside its namespace (user networks: IPv6)."""

    def _forget(self, container_id: str) -> None:
        self.endpoints.pop(container_id, None)

    @staticmethod
    def _del_link(name: str) -> None:
        rtnl.del_link(name)

    # --- deleting: the fast part now, the kernel's slow part in the background -------------
    #
    # Deleting a veth waits for the kernel to let go of it (synchronize_net, ~10-30 ms). What the
    # caller needs at once is that the container's id, host ports (their DNAT rules go at once:
    # one iptables-restore) and namespace file are free;
    # the interface can go later, as long as its address is not handed out while the old
    # interface still holds it. So begin_delete() takes the endpoint off the books and unmounts
    # its namespace, and the address stays allocated (to no container) until complete() has
    # deleted the veth; the manager runs that in a thread of its own, journals the veths still
    # to delete in its record file (finished at start-up after a crash) and waits for them at
    # shutdown. An allocation that finds no address free first finishes the deletions.

    def begin_delete(self, endpoint: Endpoint) -> Release:
        """Take the endpoint off the books and unmount its namespace. Idempotent."""
        self.endpoints.pop(endpoint.container_id, None)
        netns.remove(self.path(endpoint.container_id))
        if endpoint.ports and self._ready and self.ipam.subnet is not None:
            self._sync_rules(nat_only=True)  # its published ports stop at once, as Docker's
        return self._hold(endpoint)

    def _hold(self, endpoint: Endpoint) -> Release:
        """The endpoint's address stays allocated, to no container, until :meth:`complete`."""
        item = Release(endpoint)
        if endpoint.ip_address and self.ipam.allocated.get(endpoint.ip_address) == endpoint.container_id:
            self.ipam.allocated[endpoint.ip_address] = ""  # (saved with the next change)
        self.releasing.append(item)
        return item

    def finish_kernel(self, item: Release) -> None:
        """Delete the veth pair (slow; needs no lock). Idempotent."""
        with item.lock:
            if item.kernel_done:
                return
            if item.endpoint.veth:
                crash_point("cleanup")
                self._del_link(item.endpoint.veth)
            item.kernel_done = True

    def complete(self, item: Release) -> None:
        """Finish a deletion: the veth, then the address. Idempotent; the caller holds the
        manager's lock."""
        if not item.finished:  # (finished by a failure: the address stays held until a restart)
            self.finish_kernel(item)
            e = item.endpoint
            if e.ip_address and self.ipam.allocated.get(e.ip_address) in ("", e.container_id):
                self.ipam.release(e.ip_address)
            item.finished = True
        if item in self.releasing:
            self.releasing.remove(item)

    def settle(self) -> None:
        """Finish every deletion in progress (the caller holds the manager's lock)."""
        for item in list(self.releasing):
            self.complete(item)

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        """Everything at once (undo of a failed create, start-up reconciliation)."""
        self.complete(self.begin_delete(endpoint))

    def is_alive(self, endpoint: Endpoint) -> bool:
        if not netns.is_mounted(self.path(endpoint.container_id)):
            return False
        with IPRoute() as ipr:
            return bool(ipr.link_lookup(ifname=endpoint.veth))

    def restore(self, endpoints: list[Endpoint]) -> None:
        """At start-up, after dead records are dropped: adopt the live ones, or clean up entirely."""
        self.endpoints = {e.container_id: e for e in endpoints}
        self.ipam.reconcile({e.ip_address: e.container_id for e in endpoints})
        if endpoints:
            self._ensure_bridge()  # also rewrites the rules from the records
        else:
            self._teardown()

    def orphans(self, known: set[str]) -> list[str]:
        """Host-side veths on the bridge that no live record owns."""
        owned = {e.veth for cid, e in self.endpoints.items() if cid in known}
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=self.bridge)
            if not br:
                return []
            return sorted(
                name for link in ipr.get_links()
                if link.get("IFLA_MASTER") == br[0]
                and (name := link.get("IFLA_IFNAME", "")).startswith("veth") and name not in owned
            )

    def remove_orphan(self, name: str) -> None:
        self._del_link(name)

    def close(self) -> None:
        """At shutdown with no bridge endpoint left: remove the bridge and skiff's chains."""
        self.settle()
        if not self.endpoints:
            self._teardown()
