"""User-defined networks against the real kernel: bridges, pools, internal, DNS, container: mode.

Root only. Each test has its own roots, a default bridge of its own name and
networks with random ids (so bridges ``br-<id>`` and chains ``SK-<id>*`` are
the test's own); the fixture checks that none of them survives.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from skiff.netsvc import netns
from skiff.netsvc.dns import DnsServer, parse_query, response
from skiff.netsvc.manager import EndpointManager
from skiff.netsvc.model import EndpointOptions
from skiff.netsvc.server import build_manager
from skiff.netsvc.store import EndpointStore

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="bridges, veths and iptables need root"),
]

BRIDGE = f"skn{os.getpid() % 100000}"  # its own, even beside another run of the suite
PREFIX = f"SKN{os.getpid() % 100000}"


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def rules(marks: list[str]) -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if any(m in line for m in marks)]


def ns_run(path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=20)


class FakeUpstream:
    """A resolver on 127.0.0.1 that answers every A query with ``answer`` (never the real upstream)."""

    def __init__(self, bind: tuple[str, int] = ("127.0.0.1", 0), answer: str = "10.9.9.9") -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.seen: list[str] = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            q = parse_query(data)
            if q is not None:
                self.seen.append(q.name)
                self.sock.sendto(response(data, q, [self.answer] if q.qtype == 1 else []), peer)

    def close(self) -> None:
        self._stop = True
        self._t.join(timeout=2)
        self.sock.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Path, Path, DnsServer, FakeUpstream]]:
    data, run = tmp_path / "data", tmp_path / "run"
    upstream = FakeUpstream()
    dns = DnsServer(lambda: [upstream.addr])
    yield data, run, dns, upstream
    while MADE:  # the test's managers: their deletions in progress finish first (as at a netsvc stop)
        MADE.pop().drain()
    m = make(data, run, dns)
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    assert m.networks is not None
    ids = [i.record.id[:12] for i in m.networks.list_networks() if i.record.driver == "bridge" and i.bridge
           and i.record.name != "bridge"]
    m.networks.prune()
    m.close()
    dns.close()
    upstream.close()
    for mp in reversed([mp for mp, _ in netns.mount_points() if mp.startswith(str(tmp_path) + "/")]):
        netns.umount(mp)
    assert all(f"br-{i}" not in links() for i in ids)
    assert f" {BRIDGE}:" not in links()
    assert rules([PREFIX, *[f"SK-{i}" for i in ids]]) == []


#: Every manager a test made (drained by the fixture).
MADE: list[EndpointManager] = []


def make(data: Path, run: Path, dns: DnsServer) -> EndpointManager:
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX, dns=dns)
    MADE.append(m)
    return m


def test_network_lifecycle_dns_and_validation(env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    data, run, dns, upstream = env
    m = make(data, run, dns)
    assert m.networks is not None
    nets = m.networks
    assert [i.record.name for i in nets.list_networks()] == ["bridge", "host", "none"]
    info = nets.create("tnet", labels={"k": "v"})
    rec = info.record
    assert rec.bridge == f"br-{rec.id[:12]}" and f" {rec.bridge}:" in links()
    assert any(f"SK-{rec.id[:12]}-POSTROUTING" in r and "MASQUERADE" in r for r in rules([f"SK-{rec.id[:12]}"]))
    before = (data / "network" / "networks.json").read_text()
    with pytest.raises(AlreadyExists):
        nets.create("tnet")
    with pytest.raises(InvalidArgument):
        nets.create("other", subnet=rec.subnet)
    with pytest.raises(InvalidArgument):
        nets.create("other", subnet="10.254.254.0/24", gateway="10.254.253.1")
    assert (data / "network" / "networks.json").read_text() == before

    a = m.create_endpoint("a" * 64, "tnet", EndpointOptions(hostname="alpha", container_name="alpha",
                                                            aliases=("web",)))
    b = m.create_endpoint("b" * 64, "tnet", EndpointOptions(hostname="beta", container_name="beta"))
    assert "nameserver 127.0.0.11" in a.resolv_conf
    assert f"default via {rec.gateway}" in ns_run(a.netns_path, "ip", "route").stdout
    for name in ("alpha", "web", "beta"):
        out = ns_run(b.netns_path, "busybox", "nslookup", name, "127.0.0.11")
        want = a.ip_address if name != "beta" else b.ip_address
        assert want in out.stdout, out.stdout + out.stderr
    fwd = ns_run(b.netns_path, "busybox", "nslookup", "elsewhere.test", "127.0.0.11")
    assert "10.9.9.9" in fwd.stdout and "elsewhere.test" in upstream.seen
    ping = ns_run(b.netns_path, "busybox", "ping", "-c1", "-W2", a.ip_address)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    with pytest.raises(FailedPrecondition):
        nets.remove("tnet")
    # container: mode shares a's namespace.
    j = m.create_endpoint("c" * 64, "container:" + "a" * 64)
    assert j.netns_path == a.netns_path and j.ip_address == a.ip_address
    m.delete_endpoint("c" * 64)
    assert Path(a.netns_path).exists()

    # Records survive a restart; DNS is served again.
    m2 = make(data, run, dns)
    assert m2.networks is not None and [i.record.name for i in m2.networks.list_networks()][-1] == "tnet"
    out = ns_run(b.netns_path, "busybox", "nslookup", "alpha", "127.0.0.11")
    assert a.ip_address in out.stdout, out.stdout + out.stderr
    for e in m2.list_endpoints():
        m2.delete_endpoint(e.container_id)
    assert m2.networks.remove("tnet") == rec.id
    assert f" {rec.bridge}:" not in links() and rules([f"SK-{rec.id[:12]}"]) == []
    assert json.loads((data / "network" / "networks.json").read_text())["networks"] == []


def test_dns_flag_servers_are_the_embedded_dns_upstreams(env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    """`--dns` on a user network: resolv.conf keeps 127.0.0.11, which forwards to those servers
    (kept across a netsvc restart); a container without it forwards to the host's."""
    data, run, dns, upstream = env
    own = FakeUpstream(("127.0.0.77", 53), answer="10.7.7.7")
    try:
        m = make(data, run, dns)
        assert m.networks is not None
        m.networks.create("dnet")
        a = m.create_endpoint("a" * 64, "dnet", EndpointOptions(hostname="alpha", container_name="alpha",
                                                                dns=("127.0.0.77",)))
        b = m.create_endpoint("b" * 64, "dnet", EndpointOptions(hostname="beta", container_name="beta"))
        with pytest.raises(InvalidArgument, match="not an ip address"):
            m.create_endpoint("c" * 64, "dnet", EndpointOptions(dns=("nope",)))
        assert a.resolv_conf.startswith("nameserver 127.0.0.11")
        for restart in (False, True):
            if restart:
                m = make(data, run, dns)
            out = ns_run(a.netns_path, "busybox", "nslookup", f"own{int(restart)}.test", "127.0.0.11").stdout
            assert "10.7.7.7" in out and f"own{int(restart)}.test" in own.seen, out
            out = ns_run(b.netns_path, "busybox", "nslookup", f"host{int(restart)}.test", "127.0.0.11").stdout
            assert "10.9.9.9" in out and f"host{int(restart)}.test" in upstream.seen, out
            assert a.ip_address in ns_run(a.netns_path, "busybox", "nslookup", "alpha", "127.0.0.11").stdout
        assert not any(n.startswith("host") for n in own.seen)
    finally:
        own.close()


def test_internal_network_has_no_route_out(env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    out_net = m.networks.create("outer").record
    rec = m.networks.create("inner", internal=True).record
    base = rec.subnet.rsplit(".", 2)[0]
    with pytest.raises(InvalidArgument):
        m.networks.create("x", subnet=rec.subnet)
    a = m.create_endpoint("a" * 64, "inner", EndpointOptions(container_name="a", ip_address=f"{base}.0.77"
                                                               if rec.subnet.endswith("/16") else ""))
    routes = ns_run(a.netns_path, "ip", "route").stdout
    assert "default" not in routes, routes
    mine = rules([f"SK-{rec.id[:12]}"])
    assert not any("MASQUERADE" in r for r in mine) and any("DROP" in r for r in mine)
    ping = ns_run(a.netns_path, "busybox", "ping", "-c1", "-W1", out_net.gateway)
    assert ping.returncode != 0
    m.delete_endpoint("a" * 64)


def test_query_parsing_roundtrip() -> None:
    q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x03web\x00" + struct.pack("!HH", 1, 1)
    parsed = parse_query(q)
    assert parsed is not None and parsed.name == "web"
    r = response(q, parsed, ["10.0.0.2"])
    assert r[:2] == q[:2] and r.endswith(socket.inet_aton("10.0.0.2"))


def test_connect_survives_restart_and_goes_with_the_container(
        env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    m.networks.create("one")
    two = m.networks.create("two").record
    a = m.create_endpoint("a" * 64, "one", EndpointOptions(container_name="alpha"))
    b = m.create_endpoint("b" * 64, "two", EndpointOptions(container_name="beta"))
    extra = m.networks.connect("two", "a" * 64, EndpointOptions(container_name="alpha", aliases=("al",)))
    assert f"inet {extra.ip_address}/" in ns_run(a.netns_path, "ip", "-o", "-4", "addr", "show", "eth1").stdout
    with pytest.raises(AlreadyExists):
        m.networks.connect("two", "a" * 64, EndpointOptions())
    # a's DNS answers names of both its networks; b reaches a by its alias on "two".
    assert b.ip_address in ns_run(a.netns_path, "busybox", "nslookup", "beta", "127.0.0.11").stdout
    assert extra.ip_address in ns_run(b.netns_path, "busybox", "nslookup", "al", "127.0.0.11").stdout
    with pytest.raises(FailedPrecondition):
        m.networks.remove("two")
    m2 = make(data, run, dns)  # a restart keeps the second interface (not taken for an orphan)
    assert extra.veth in links()
    m2.delete_endpoint("a" * 64)
    assert extra.veth not in links()
    assert m2.networks is not None and m2.networks.attachments == {}
    m2.delete_endpoint("b" * 64)
    assert m2.networks.remove("two") == two.id


def _tcp_reaches(client_ns: str, server_ns: str, ip: str, port: int) -> bool:
    """A busybox nc server in ``server_ns`` on ``port``; whether ``client_ns`` gets its greeting."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "busybox", "sh", "-c",
                               f"echo hello | busybox nc -l -p {port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # until it listens (bounded: 5 s)
            if f":{port:04X}" in ns_run(server_ns, "cat", "/proc/net/tcp").stdout.upper():
                break
            threading.Event().wait(0.1)
        got = ns_run(client_ns, "busybox", "nc", "-w", "2", ip, str(port))
        return "hello" in got.stdout
    finally:
        server.kill()
        server.wait(timeout=10)


def test_networks_are_isolated_from_each_other(env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    """Docker's DOCKER-ISOLATION: no traffic between two networks, or a network and the default bridge."""
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    one, two = m.networks.create("one").record, m.networks.create("two").record
    a = m.create_endpoint("a" * 64, "one", EndpointOptions(container_name="a"))
    a2 = m.create_endpoint("d" * 64, "one", EndpointOptions(container_name="d"))
    b = m.create_endpoint("b" * 64, "two", EndpointOptions(container_name="b"))
    c = m.create_endpoint("c" * 64, "bridge")
    iso = [r for r in rules([f"{PREFIX}-ISOLATION"]) if r.startswith("-A ")]
    for br in (one.bridge, two.bridge, BRIDGE):
        assert f"-A {PREFIX}-ISOLATION-2 -o {br} -j DROP" in iso, iso
    assert _tcp_reaches(a2.netns_path, a.netns_path, a.ip_address, 8081)  # same network: yes
    assert not _tcp_reaches(b.netns_path, a.netns_path, a.ip_address, 8082)  # other network: no
    assert not _tcp_reaches(c.netns_path, a.netns_path, a.ip_address, 8083)  # default bridge: no
    assert not _tcp_reaches(a.netns_path, c.netns_path, c.ip_address, 8084)  # and back: no
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    m.networks.remove("two")
    assert not any(two.bridge in r for r in rules([f"{PREFIX}-ISOLATION"]))
    m.networks.remove("one")
    m.close()  # the last bridge goes: the isolation chains go with it
    assert rules([f"{PREFIX}-ISOLATION"]) == []


def test_release_keeps_connections_for_the_next_start_and_delete_forgets_them(
        env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    """A stop (release) frees the addresses; the next create makes the connections again; rm forgets."""
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    m.networks.create("one")
    m.networks.create("two")
    cid = "a" * 64
    a = m.create_endpoint(cid, "one", EndpointOptions(container_name="alpha"))
    extra = m.networks.connect("two", cid, EndpointOptions(container_name="alpha", aliases=("al",)))
    m.delete_endpoint(cid, release=True)
    assert not Path(a.netns_path).exists()  # at once; the veth and address once the deletion is done
    journal = EndpointStore(data / "network" / "endpoints.json").load_cleanup()
    assert journal == sorted([a.veth, extra.veth])  # the connected interface too
    m.drain()
    assert a.veth not in links() and extra.veth not in links()
    assert a.ip_address not in m.drivers["one"].ipam.allocated  # type: ignore[attr-defined]
    assert extra.ip_address not in m.drivers["two"].ipam.allocated  # type: ignore[attr-defined]
    m = make(data, run, dns)  # the kept connections survive a netsvc restart
    assert m.networks is not None
    a2 = m.create_endpoint(cid, "one", EndpointOptions(container_name="alpha"))
    eth1 = ns_run(a2.netns_path, "ip", "-o", "-4", "addr", "show", "eth1").stdout
    again = m.networks.attachments[(cid, "two")][1]
    assert f"inet {again.ip_address}/" in eth1 and "al" in again.aliases
    m.delete_endpoint(cid, release=True)
    m.delete_endpoint(cid)  # rm of the stopped container: nothing kept
    assert m.networks.pending == {}
    a3 = m.create_endpoint(cid, "one", EndpointOptions(container_name="alpha"))
    assert "eth1" not in ns_run(a3.netns_path, "ip", "-o", "link").stdout
    m.delete_endpoint(cid)


def test_ipv6_network_addresses_route_and_the_host_reaches_the_container(
        env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    if any(Path(f"/proc/sys/net/ipv6/conf/all/{k}").read_text().strip() == "1" for k in ("forwarding", "disable_ipv6")):
        pytest.skip("this host forwards IPv6 or has it disabled: skiff refuses IPv6 networks then")
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    for bad in ({"enable_ipv6": True}, {"ipv6_subnet": "fd00:5::/64"},
                {"enable_ipv6": True, "ipv6_subnet": "10.1.2.0/24"},
                {"enable_ipv6": True, "ipv6_subnet": "fd00:5::/120", "subnet": "10.251.0.0/16"}):
        with pytest.raises(InvalidArgument):
            m.networks.create("v6bad", **bad)  # type: ignore[arg-type]
    rec = m.networks.create("v6", subnet="10.251.7.0/24", enable_ipv6=True, ipv6_subnet="fd00:5:7::/64").record
    assert (rec.ipv6_subnet, rec.ipv6_gateway) == ("fd00:5:7::/64", "fd00:5:7::1")
    with pytest.raises(InvalidArgument):
        m.networks.create("v6b", subnet="10.251.8.0/24", enable_ipv6=True, ipv6_subnet="fd00:5:7::/64")
    a = m.create_endpoint("a" * 64, "v6", EndpointOptions(container_name="a"))
    b = m.create_endpoint("b" * 64, "v6", EndpointOptions(container_name="b"))
    assert (a.ipv6_address, a.ipv6_prefix_length, a.ipv6_gateway) == ("fd00:5:7::2", 64, "fd00:5:7::1")
    assert b.ipv6_address == "fd00:5:7::3"
    assert "inet6 fd00:5:7::2/64" in ns_run(a.netns_path, "ip", "-6", "addr", "show", "eth0").stdout
    assert "default via fd00:5:7::1" in ns_run(a.netns_path, "ip", "-6", "route").stdout
    ping = ns_run(b.netns_path, "busybox", "ping", "-6", "-c1", "-W2", a.ipv6_address)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    server = subprocess.Popen(["nsenter", f"--net={a.netns_path}", "busybox", "sh", "-c",
                               "echo hello6 | busybox nc -l -p 7077"], stdout=subprocess.DEVNULL)
    try:
        got = b""
        for _ in range(50):  # bounded: until it listens (5 s)
            try:
                with socket.create_connection((a.ipv6_address, 7077), timeout=2) as s:
                    got = s.recv(16)
                break
            except OSError:
                threading.Event().wait(0.1)
        assert got == b"hello6\n"  # from the host, over the ULA on the bridge
    finally:
        server.kill()
        server.wait(timeout=10)
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    m.networks.remove("v6")
    assert "fd00:5:7::" not in subprocess.run(["ip", "-6", "route"], capture_output=True, text=True).stdout


def test_a_full_pool_or_a_wanted_address_waits_for_the_deletion_in_progress(
        env: tuple[Path, Path, DnsServer, FakeUpstream]) -> None:
    """An address is given again only once the deleted endpoint's interface is gone: with every
    address of a small pool taken, or ``--ip`` asking for the address just freed, a create right
    after a delete finishes that deletion first, then works."""
    data, run, dns, _ = env
    m = make(data, run, dns)
    assert m.networks is not None
    base = f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}"
    m.networks.create("tiny", subnet=f"{base}.0/24", ip_range=f"{base}.0/29")  # .1 gateway: .2-.6
    made = [m.create_endpoint(f"{i:x}" * 64, "tiny", EndpointOptions(container_name=f"c{i}")) for i in range(2, 7)]
    assert sorted(e.ip_address for e in made) == [f"{base}.{i}" for i in range(2, 7)]
    m.delete_endpoint(made[0].container_id)
    again = m.create_endpoint("b" * 64, "tiny", EndpointOptions(container_name="again"))
    assert again.ip_address == made[0].ip_address and made[0].veth not in links()
    m.delete_endpoint(made[1].container_id)
    wanted = m.create_endpoint("c" * 64, "tiny", EndpointOptions(container_name="wanted",
                                                                   ip_address=made[1].ip_address))
    assert wanted.ip_address == made[1].ip_address and made[1].veth not in links()
    for e in (again, wanted):
        ping = ns_run(e.netns_path, "busybox", "ping", "-c1", "-W2", made[2].ip_address)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    m.networks.remove("tiny")
