"""The embedded DNS over TCP, against the real kernel: a namespace of the test's own, the server's
UDP socket and TCP listener on 127.0.0.11:53 inside it, and a client run in it (by nsenter) that
does what a stub resolver does: UDP first, TCP again after a truncated (TC) answer. The upstream
is a fake one on the host's 127.0.0.1. Root only; the fixture checks no mount survives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.netsvc import netns
from skiff.netsvc.dns import DnsServer, parse_query, recv_message, response, send_message

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and mounts need root"),
]

MANY = [f"10.8.0.{i}" for i in range(1, 61)]  # 60 A records: more than 512 bytes
FAR = [f"10.9.0.{i}" for i in range(1, 61)]

#: A stub resolver's behaviour, run inside the namespace: prints what it got over each transport.
CLIENT = r"""
import json, socket, struct, sys

def query(name, ident):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", 1, 1)

def answers(reply):
    # the A records' addresses (each answer: compressed name, then type/class/ttl/len, then 4 bytes)
    n = struct.unpack("!H", reply[6:8])[0]
    pos = reply.index(b"\x00", 12) + 5
    out = []
    for _ in range(n):
        rdlen = struct.unpack("!H", reply[pos + 10:pos + 12])[0]
        out.append(socket.inet_ntoa(reply[pos + 12:pos + 12 + rdlen]))
        pos += 12 + rdlen
    return out

result = {}
for ident, name in enumerate(sys.argv[1:], 1):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(10)
        u.sendto(query(name, ident), ("127.0.0.11", 53))
        reply = u.recv(65535)
    got = {"udp_len": len(reply), "udp_tc": bool(struct.unpack("!H", reply[2:4])[0] & 0x0200),
           "udp": answers(reply)}
    if got["udp_tc"]:
        with socket.create_connection(("127.0.0.11", 53), timeout=10) as t:
            packet = query(name, ident + 100)
            t.sendall(struct.pack("!H", len(packet)) + packet)
            size = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
            reply = t.recv(size, socket.MSG_WAITALL)
        got["tcp_id"] = struct.unpack("!H", reply[:2])[0]
        got["tcp"] = answers(reply)
    result[name] = got
print(json.dumps(result))
"""


class Upstream:
    """A fake resolver on the host's 127.0.0.1, UDP and TCP on one port: ``far.test`` gets FAR."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(4)
        self.tcp.settimeout(0.2)
        self.addr = self.tcp.getsockname()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(self.addr)
        self.udp.settimeout(0.2)
        self.seen: list[tuple[str, str]] = []
        self._stop = False
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    def _answer(self, data: bytes | None, transport: str) -> bytes | None:
        q = parse_query(data) if data else None
        if data is None or q is None:
            return None
        self.seen.append((transport, q.name))
        return response(data, q, FAR if q.name == "far.test" else [])

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                continue
            reply = self._answer(data, "udp")
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    reply = self._answer(recv_message(conn), "tcp")
                    if reply is not None:
                        send_message(conn, reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(timeout=5)
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    directory = tmp_path / "netns"
    netns.ensure_mount_point(directory)
    path = directory / "dns-tcp"
    netns.create(path)
    yield str(path)
    netns.remove(path)
    for mp in reversed([mp for mp, _ in netns.mount_points() if mp.startswith(str(tmp_path) + "/")]):
        netns.umount(mp)
    assert not [mp for mp, _ in netns.mount_points() if mp.startswith(str(tmp_path) + "/")]


def in_ns(path: str, *names: str) -> dict[str, Any]:
    out = subprocess.run(["nsenter", f"--net={path}", sys.executable, "-c", CLIENT, *names],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_truncated_udp_answers_are_asked_again_over_tcp(ns: str) -> None:
    up = Upstream()
    server = DnsServer(lambda: [up.addr])
    try:
        server.attach("k" * 64, ns, lambda name: MANY if name == "many" else ["10.8.1.1"] if name == "one" else None)
        got = in_ns(ns, "one", "many", "far.test")
        # a small answer: whole over UDP
        assert got["one"] == {"udp_len": got["one"]["udp_len"], "udp_tc": False, "udp": ["10.8.1.1"]}
        # a known name with 60 addresses: UDP truncated to whole records within 512 bytes, TCP in full
        for name, want in (("many", MANY), ("far.test", FAR)):
            g = got[name]
            assert g["udp_tc"] is True and g["udp_len"] <= 512, g
            assert set(g["udp"]) < set(want)
            assert g["tcp"] == want and g["tcp_id"] == list(got).index(name) + 101, g
        # the name it does not know was relayed: over UDP first, then over TCP
        assert [s for s in up.seen if s[1] == "far.test"] == [("udp", "far.test"), ("tcp", "far.test")]
        server.detach("k" * 64)
        gone = subprocess.run(["nsenter", f"--net={ns}", sys.executable, "-c",
                               "import socket; socket.create_connection(('127.0.0.11', 53), timeout=5)"],
                              capture_output=True, text=True, timeout=60)
        assert gone.returncode != 0 and "ConnectionRefusedError" in gone.stderr
    finally:
        server.close()
        up.close()
