"""The embedded DNS over TCP in a real container on a user network: a stub-like client run in the
container's network namespace (nsenter) asks 127.0.0.11 over UDP and over TCP; only names the
embedded DNS knows are asked (nothing goes upstream)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

CLIENT = r"""
import json, socket, struct, sys

def query(name, ident):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", 1, 1)

def addresses(reply):
    n = struct.unpack("!H", reply[6:8])[0]
    pos = reply.index(b"\x00", 12) + 5
    out = []
    for _ in range(n):
        rdlen = struct.unpack("!H", reply[pos + 10:pos + 12])[0]
        out.append(socket.inet_ntoa(reply[pos + 12:pos + 12 + rdlen]))
        pos += 12 + rdlen
    return out

out = {}
with socket.create_connection(("127.0.0.11", 53), timeout=10) as t:  # one connection, several queries
    for ident, name in enumerate(sys.argv[1:], 1):
        packet = query(name, ident)
        t.sendall(struct.pack("!H", len(packet)) + packet)
        size = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
        reply = t.recv(size, socket.MSG_WAITALL)
        out[name] = {"id": struct.unpack("!H", reply[:2])[0], "tcp": addresses(reply)}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.sendto(packet, ("127.0.0.11", 53))
            out[name]["udp"] = addresses(u.recv(512))
print(json.dumps(out))
"""


def test_embedded_dns_answers_over_tcp_in_a_container(skiff) -> None:
    tag = f"dnstcp-{uuid.uuid4().hex[:6]}"
    net, web, asker = f"{tag}-net", f"{tag}-web", f"{tag}-asker"
    skiff("network", "create", net, check=True)
    try:
        skiff("run", "-d", "--name", web, "--network", net, "--network-alias", f"{tag}-alias", "busybox",
              "sleep", "300", check=True)
        skiff("run", "-d", "--name", asker, "--network", net, "busybox", "sleep", "300", check=True)
        ip = json.loads(skiff("inspect", web, check=True).stdout)[0]["NetworkSettings"]["IPAddress"]
        pid = skiff("inspect", "--format", "{{.State.Pid}}", asker, check=True).stdout.strip()
        r = subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, "-c", CLIENT, web, f"{tag}-alias"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        for i, name in enumerate((web, f"{tag}-alias"), 1):
            assert got[name] == {"id": i, "tcp": [ip], "udp": [ip]}, got
    finally:
        skiff("rm", "-f", web, asker)
        skiff("network", "rm", net)
