"""The embedded DNS (packets, answers, forwarding to a fake upstream on 127.0.0.1) and user-network
pieces that need no root: pools, internal rules, resolv.conf."""

from __future__ import annotations

import socket
import struct
import threading
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from skiff.common.errors import FailedPrecondition, InvalidArgument
from skiff.netsvc import dns
from skiff.netsvc.dns import (
    FLAG_TC,
    RCODE_SERVFAIL,
    DnsServer,
    host_upstreams,
    parse_query,
    recv_message,
    response,
    udp_reply,
)
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


def tcp_ask(addr: tuple[str, int], packet: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(struct.pack("!H", len(packet)) + packet)
        got = recv_message(s)
        assert got is not None
        return got


def counts(reply: bytes) -> tuple[int, int]:
    """(flags, answer count) of a reply."""
    return struct.unpack("!H", reply[2:4])[0], struct.unpack("!H", reply[6:8])[0]


def with_edns(packet: bytes, size: int) -> bytes:
    """``packet`` with an OPT record announcing ``size`` as its UDP payload size."""
    head = bytearray(packet[:12])
    head[10:12] = struct.pack("!H", 1)
    return bytes(head) + packet[12:] + b"\x00" + struct.pack("!HHIH", 41, size, 0, 0)


MANY = [f"10.7.{i // 250}.{i % 250 + 1}" for i in range(60)]  # 60 A records: 960 bytes of answers


def test_udp_answers_over_512_bytes_are_truncated_with_tc() -> None:
    data = query("many")
    q = parse_query(data)
    assert q is not None and q.udp_size == 512
    full = response(data, q, MANY)
    assert len(full) > 512 and counts(full)[1] == 60 and not counts(full)[0] & FLAG_TC
    cut = response(data, q, MANY, limit=q.udp_size)
    flags, n = counts(cut)
    assert flags & FLAG_TC and len(cut) <= 512 and 0 < n < 60
    assert (len(cut) - len(data)) == n * 16  # whole records only
    # EDNS0: the client's payload size is honoured (at most 4096).
    big = with_edns(data, 1232)
    qb = parse_query(big)
    assert qb is not None and qb.udp_size == 1232
    flags, n = counts(response(big, qb, MANY, limit=qb.udp_size))
    assert not flags & FLAG_TC and n == 60
    huge = parse_query(with_edns(data, 65000))
    assert huge is not None and huge.udp_size == 4096
    # A relayed reply too large keeps the whole records that fit (a prefix of it), with TC.
    t = udp_reply(full, data, q)
    flags, n = counts(t)
    assert flags == counts(full)[0] | FLAG_TC and n == (512 - len(data)) // 16 and len(t) <= 512
    assert t[12:] == full[12:len(t)] and struct.unpack("!HH", t[8:12]) == (0, 0)
    assert udp_reply(full, big, qb) == full
    # one that cannot be walked (cut short) keeps only its question
    broken = full[:6] + struct.pack("!H", 99) + full[8:]
    t = udp_reply(broken, data, q)
    assert counts(t) == (counts(full)[0] | FLAG_TC, 0) and t[12:] == data[12:]


class TcpUpstream:
    """A fake resolver on 127.0.0.1 over TCP: every A query gets ``MANY``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.seen: list[str] = []
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = recv_message(conn)
                q = parse_query(data) if data else None
                if data is not None and q is not None:
                    self.seen.append(q.name)
                    reply = response(data, q, MANY)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self) -> None:
        self._stop = True
        self._t.join(timeout=5)
        self.sock.close()


def listeners() -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    return udp, tcp


def test_tcp_answers_in_full_and_relays_over_tcp(upstream: socket.socket) -> None:
    up = TcpUpstream()
    server = DnsServer(lambda: [up.addr])
    udp, tcp = listeners()
    server.attach_socket("c1", udp, lambda n: MANY if n == "many" else None, tcp=tcp)
    try:
        flags, n = counts(ask(udp.getsockname(), query("many")))
        assert flags & FLAG_TC and n < 60  # UDP: truncated; the client asks again over TCP
        r = tcp_ask(tcp.getsockname(), query("many", ident=9))
        assert r[:2] == struct.pack("!H", 9) and counts(r) == (counts(r)[0] & ~FLAG_TC, 60)
        # Several queries on one connection; names it does not know go upstream over TCP.
        with socket.create_connection(tcp.getsockname(), timeout=5) as s:
            for ident, name in ((1, "many"), (2, "far.test")):
                packet = query(name, ident=ident)
                s.sendall(struct.pack("!H", len(packet)) + packet)
                got = recv_message(s)
                assert got is not None and got[:2] == struct.pack("!H", ident) and counts(got)[1] == 60
        assert up.seen == ["far.test"]
    finally:
        server.close()
        up.close()


def test_tcp_without_upstream_gives_servfail() -> None:
    server = DnsServer(lambda: [])
    udp, tcp = listeners()
    server.attach_socket("c1", udp, lambda n: None, tcp=tcp)
    try:
        r = tcp_ask(tcp.getsockname(), query("nowhere.test"))
        assert counts(r)[0] & 0xF == RCODE_SERVFAIL
    finally:
        server.close()


def test_slow_tcp_clients_do_not_block_udp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle TCP clients hold their own threads (a bounded number: more are closed at once);
    UDP answers go on meanwhile, and a detach ends their connections."""
    monkeypatch.setattr(dns, "MAX_TCP_CONNECTIONS", 2)
    server = DnsServer(lambda: [])
    udp, tcp = listeners()
    server.attach_socket("c1", udp, lambda n: ["172.30.0.2"] if n == "web" else None, tcp=tcp)
    idle = [socket.create_connection(tcp.getsockname(), timeout=10) for _ in range(2)]
    try:
        idle[0].sendall(b"\x00")  # half a length prefix, then nothing
        assert ask(udp.getsockname(), query("web")).endswith(socket.inet_aton("172.30.0.2"))
        with socket.create_connection(tcp.getsockname(), timeout=10) as third:
            assert third.recv(16) == b""  # over the bound: closed by the server
        server.detach("c1")
        for s in idle:
            assert s.recv(16) == b""
    finally:
        for s in idle:
            s.close()
        server.close()


def test_a_busy_tcp_client_is_closed_after_the_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns, "TCP_MAX_LIFETIME", 0.3)
    monkeypatch.setattr(dns, "TCP_MAX_QUERIES", 10_000)  # only the lifetime ends it
    server = DnsServer(lambda: [])
    udp, tcp = listeners()
    server.attach_socket("c1", udp, lambda n: ["172.30.0.2"] if n == "web" else None, tcp=tcp)
    try:
        with socket.create_connection(tcp.getsockname(), timeout=10) as s:
            answered = 0
            for i in range(200):  # bounded: well past the lifetime
                packet = query("web", ident=i)
                try:
                    s.sendall(struct.pack("!H", len(packet)) + packet)
                    got = recv_message(s)
                except OSError:
                    got = None
                if got is None:
                    break
                answered += 1
                time.sleep(0.05)
            else:
                raise AssertionError("the connection was never closed")
            assert answered >= 1
    finally:
        server.close()
