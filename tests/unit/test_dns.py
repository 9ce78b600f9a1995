"""The embedded DNS (packets, answers, forwarding to a fake upstream on 127.0.0.1) and user-network
pieces that need no root: pools, internal rules, resolv.conf."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from skiff.common.errors import FailedPrecondition, InvalidArgument
from skiff.netsvc.dns import RCODE_SERVFAIL, DnsServer, host_upstreams, parse_query, response
from skiff.netsvc.etcfiles import embedded_resolv_conf
from skiff.netsvc.networks import InternalRules, NetIpam


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def ask(addr: tuple[str, int], packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(packet, addr)
        return s.recv(4096)


def test_parse_and_answer() -> None:
    q = parse_query(query("Web.Example"))
    assert q is not None and q.name == "web.example" and q.qtype == 1
    data = query("web")
    q = parse_query(data)
    assert q is not None
    r = response(data, q, ["10.1.2.3"])
    ident, flags, qd, an = struct.unpack("!HHHH", r[:8])
    assert (ident, qd, an) == (0x1234, 1, 1) and flags & 0x8000 and r.endswith(socket.inet_aton("10.1.2.3"))
    assert parse_query(b"\x00" * 5) is None
    assert parse_query(r) is None  # a response is not a query


def test_a_and_aaaa_answers_take_their_own_family() -> None:
    both = ["10.1.2.3", "fd00:9:9::2"]
    for qtype, packed in ((1, socket.inet_aton("10.1.2.3")), (28, socket.inet_pton(socket.AF_INET6, "fd00:9:9::2"))):
        data = query("web", qtype)
        q = parse_query(data)
        assert q is not None
        r = response(data, q, both)
        assert struct.unpack("!H", r[6:8])[0] == 1  # one answer
        answer = r[len(data):]
        rtype, _, _, rdlen = struct.unpack("!HHIH", answer[2:12])
        assert (rtype, rdlen, answer[12:]) == (qtype, len(packed), packed)
    data = query("web", 15)  # MX of a known name: NOERROR, no answers
    q = parse_query(data)
    assert q is not None and struct.unpack("!HHHH", response(data, q, both)[:8])[3] == 0


def test_host_upstreams_skip_the_stub() -> None:
    text = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n"
    assert host_upstreams(text) == [("10.0.0.2", 53)]


@pytest.fixture
def upstream() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def test_server_answers_known_names_and_forwards_the_rest(upstream: socket.socket) -> None:
    server = DnsServer(lambda: [upstream.getsockname()])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    addr = sock.getsockname()
    names = {"web": ["172.30.0.2"]}
    server.attach_socket("c1", sock, lambda n: names.get(n))
    try:
        r = ask(addr, query("web"))
        assert r.endswith(socket.inet_aton("172.30.0.2"))
        r = ask(addr, query("web", qtype=28))  # AAAA of a known name: empty, NOERROR
        assert struct.unpack("!HH", r[2:6])[0] & 0xF == 0 and struct.unpack("!H", r[6:8])[0] == 0
        # Anything else goes to the (fake) upstream; its reply is relayed as it is.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            data = query("elsewhere.test", ident=77)
            client.sendto(data, addr)
            upstream.settimeout(5)
            got, peer = upstream.recvfrom(4096)
            assert got == data
            q = parse_query(got)
            assert q is not None
            upstream.sendto(response(got, q, ["10.9.9.9"]), peer)
            assert client.recv(4096).endswith(socket.inet_aton("10.9.9.9"))
    finally:
        server.close()


def test_no_upstream_gives_servfail() -> None:
    server = DnsServer(lambda: [])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server.attach_socket("c1", sock, lambda n: None)
    try:
        r = ask(sock.getsockname(), query("nowhere.test"))
        assert struct.unpack("!H", r[2:4])[0] & 0xF == RCODE_SERVFAIL
    finally:
        server.close()


def test_pool_with_gateway_range_and_fixed_ip(tmp_path: Path) -> None:
    ipam = NetIpam(tmp_path / "ipam.json", IPv4Network("10.50.0.0/24"), IPv4Address("10.50.0.10"),
                   IPv4Network("10.50.0.8/29"))
    got = [ipam.allocate(f"c{i}") for i in range(5)]
    assert IPv4Address("10.50.0.10") not in got and all(a in IPv4Network("10.50.0.8/29") for a in got)
    assert ipam.allocate("fixed", "10.50.0.100") == IPv4Address("10.50.0.100")
    with pytest.raises(FailedPrecondition):
        ipam.allocate("other", "10.50.0.100")
    with pytest.raises(InvalidArgument):
        ipam.allocate("other", "10.50.0.10")  # the gateway
    with pytest.raises(InvalidArgument):
        ipam.allocate("other", "10.51.0.5")


def test_internal_rules_have_no_masquerade() -> None:
    rules = InternalRules("br-abc", "SK-abc")
    rules._jumps_ok = True  # render only skiff's own chains
    text = rules.render("10.60.0.0/24", [])
    assert "MASQUERADE" not in text
    assert "-A SK-abc-FORWARD -i br-abc -o br-abc -j ACCEPT" in text
    assert "-A SK-abc-FORWARD -i br-abc -j DROP" in text


def test_embedded_resolv_conf() -> None:
    text = embedded_resolv_conf("nameserver 10.0.0.2\nsearch corp\noptions ndots:2 edns0\n")
    assert text == "nameserver 127.0.0.11\nsearch corp\noptions edns0 ndots:0\n"
