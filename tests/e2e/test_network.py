"""The default bridge network and published ports, through skiffd and the CLI.

Traffic goes only to 127.0.0.1 (a published port) and between the containers
this test starts; every loop is bounded in count and time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import Engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, attempts: int = 50) -> str:
    err: Exception | None = None
    for _ in range(attempts):  # ~5 s at most: httpd needs a moment to listen
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return str(resp.read().decode())
        except OSError as e:
            err = e
            time.sleep(0.1)
    raise AssertionError(f"{url}: {err}")


def skiff_rules() -> list[str]:
    """This engine's DNAT rules (its bridge is skt<pid>: see conftest)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    prefix = f"SKIFF-SKT{os.getpid() % 1000000}"
    return [line for line in out.splitlines() if prefix in line and "-j DNAT" in line]


def test_published_port_serves_from_the_container(engine: Engine) -> None:
    port = free_port()
    cid = engine.skiff("run", "-d", "--name", "web", "-h", "webhost", "-p", f"127.0.0.1:{port}:8080",
                       "busybox", "httpd", "-f", "-p", "8080", "-h", "/etc", check=True).stdout.strip()
    try:
        assert fetch(f"http://127.0.0.1:{port}/hostname").strip() == "webhost"
        ps = engine.skiff("ps", check=True).stdout
        assert f"127.0.0.1:{port}->8080/tcp" in ps
        info = json.loads(engine.skiff("inspect", cid, check=True).stdout)[0]
        net = info["NetworkSettings"]
        assert net["IPAddress"] and net["Gateway"]
        assert len(skiff_rules()) == 1
        refused = engine.skiff("run", "-d", "--name", "refused", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        assert refused.returncode != 0 and "already allocated" in refused.stderr
    finally:
        engine.skiff("rm", "-f", "web", "refused")
    assert skiff_rules() == []


def test_run_gets_eth0_on_the_bridge_and_its_etc_files(engine: Engine) -> None:
    out = engine.skiff("run", "--rm", "-h", "boxy", "--add-host", "db:10.1.2.3", "--dns", "192.0.2.53",
                       "busybox", "sh", "-c", "ip -o -4 addr; cat /etc/hosts /etc/resolv.conf /etc/hostname",
                       check=True).stdout
    line = next(ln for ln in out.splitlines() if " eth0 " in ln)
    addr = ipaddress.IPv4Interface(line.split()[3])
    assert not addr.ip.is_loopback
    assert f"{addr.ip}\tboxy" in out and "10.1.2.3\tdb" in out
    assert "nameserver 192.0.2.53" in out and out.rstrip().endswith("boxy")


def test_network_none_and_host_still_work(engine: Engine) -> None:
    out = engine.skiff("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link", check=True).stdout
    assert "eth0" not in out and "lo" in out
    hosts = engine.skiff("run", "--rm", "--network", "none", "-h", "lonely", "busybox", "cat", "/etc/hosts",
                         check=True).stdout
    assert "lonely" in hosts


def test_publish_all_picks_free_host_ports(engine: Engine) -> None:
    cid = engine.skiff("run", "-d", "--name", "webp", "-h", "anyport", "-P", "--expose", "8080", "busybox",
                       "httpd", "-f", "-p", "8080", "-h", "/etc", check=True).stdout.strip()
    try:
        info = json.loads(engine.skiff("inspect", cid, check=True).stdout)[0]
        binding = info["NetworkSettings"]["Ports"]["8080/tcp"][0]
        assert binding["HostIp"] == "0.0.0.0" and int(binding["HostPort"]) > 0
        assert fetch(f"http://127.0.0.1:{binding['HostPort']}/hostname").strip() == "anyport"
        assert f"0.0.0.0:{binding['HostPort']}->8080/tcp" in engine.skiff("ps", check=True).stdout
    finally:
        engine.skiff("rm", "-f", "webp", check=True)
    assert skiff_rules() == []


def test_stop_releases_address_and_ports_and_start_takes_them_again(engine: Engine) -> None:
    """As Docker: a stopped container holds no address and no host port; after start it serves again."""
    port = free_port()
    serve = ["busybox", "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
    engine.skiff("run", "-d", "--name", "rel", "-h", "first", "-p", f"127.0.0.1:{port}:8080", *serve, check=True)
    try:
        assert fetch(f"http://127.0.0.1:{port}/").strip() == "first"
        engine.skiff("stop", "-t", "1", "rel", check=True)
        info = json.loads(engine.skiff("inspect", "rel", check=True).stdout)[0]
        assert info["NetworkSettings"]["IPAddress"] == "" and not any((info["NetworkSettings"]["Ports"] or {}).values())
        assert engine.skiff("port", "rel").stdout.strip() == ""
        assert skiff_rules() == []
        # Its host port is free for another container.
        engine.skiff("run", "-d", "--name", "rel2", "-h", "second", "-p", f"127.0.0.1:{port}:8080", *serve,
                     check=True)
        assert fetch(f"http://127.0.0.1:{port}/").strip() == "second"
        assert engine.skiff("start", "rel").returncode != 0  # the port is taken now: refused
        engine.skiff("rm", "-f", "rel2", check=True)
        engine.skiff("start", "rel", check=True)
        assert fetch(f"http://127.0.0.1:{port}/").strip() == "first"
        assert f"8080/tcp -> 127.0.0.1:{port}" in engine.skiff("port", "rel", check=True).stdout
        assert json.loads(engine.skiff("inspect", "rel", check=True).stdout)[0]["NetworkSettings"]["IPAddress"]
        # A container that exits by itself gives its address back too.
        engine.skiff("run", "-d", "--name", "quick", "busybox", "true", check=True)
        ip = "unset"
        for _ in range(100):  # bounded: ~10 s
            ip = json.loads(engine.skiff("inspect", "quick", check=True).stdout)[0]["NetworkSettings"]["IPAddress"]
            if not ip:
                break
            time.sleep(0.1)
        assert ip == ""
    finally:
        engine.skiff("rm", "-f", "rel", "rel2", "quick")
    assert skiff_rules() == []


def test_mac_address_is_set_inside_and_shown_by_inspect(engine: Engine) -> None:
    mac = "02:de:ad:be:ef:07"
    engine.skiff("run", "-d", "--name", "withmac", "--mac-address", mac.upper(), "busybox", "sleep", "60", check=True)
    try:
        inside = engine.skiff("exec", "withmac", "cat", "/sys/class/net/eth0/address", check=True).stdout.strip()
        assert inside == mac
        info = json.loads(engine.skiff("inspect", "withmac", check=True).stdout)[0]
        assert info["NetworkSettings"]["MacAddress"] == mac
    finally:
        engine.skiff("rm", "-f", "withmac")
    bad = engine.skiff("run", "--rm", "--mac-address", "zz:11:22:33:44:55", "busybox", "true")
    assert bad.returncode == 125 and "mac address" in bad.stderr
    host = engine.skiff("run", "--rm", "--network", "host", "--mac-address", mac, "busybox", "true")
    assert host.returncode == 125 and "conflicting options" in host.stderr


def test_publish_all_publishes_the_image_expose_and_expose(engine: Engine, busybox_tar: Path) -> None:
    """-P publishes the image's EXPOSE (import --change, commit --change) merged with --expose."""
    engine.skiff("import", "--change", "EXPOSE 8080", "--change", 'CMD ["httpd", "-f", "-p", "8080", "-h", "/etc"]',
                 str(busybox_tar), "exposing:1", check=True)
    try:
        img = json.loads(engine.skiff("inspect", "--type", "image", "exposing:1", check=True).stdout)[0]
        assert img["Config"]["ExposedPorts"] == {"8080/tcp": {}}
        engine.skiff("run", "-d", "--name", "exp1", "-h", "fromimage", "-P", "--expose", "9999/udp", "exposing:1",
                     check=True)
        ports = engine.skiff("port", "exp1", check=True).stdout
        assert "8080/tcp -> 0.0.0.0:" in ports and "9999/udp -> 0.0.0.0:" in ports, ports
        host_port = int(ports.split("8080/tcp -> 0.0.0.0:")[1].split()[0])
        assert fetch(f"http://127.0.0.1:{host_port}/hostname").strip() == "fromimage"
        engine.skiff("commit", "--change", "EXPOSE 7070", "exp1", "exposing:2", check=True)
        img = json.loads(engine.skiff("inspect", "--type", "image", "exposing:2", check=True).stdout)[0]
        assert set(img["Config"]["ExposedPorts"]) == {"8080/tcp", "9999/udp", "7070/tcp"}
        engine.skiff("run", "-d", "--name", "exp2", "-P", "exposing:2", check=True)
        assert "7070/tcp -> 0.0.0.0:" in engine.skiff("port", "exp2", check=True).stdout
    finally:
        engine.skiff("rm", "-f", "exp1", "exp2")
        engine.skiff("rmi", "exposing:1", "exposing:2")
    assert skiff_rules() == []


def test_port_of_a_container_that_exited_by_itself_is_free_at_once(engine: Engine) -> None:
    port = free_port()
    engine.skiff("run", "-d", "--name", "selfexit", "-p", f"127.0.0.1:{port}:80", "busybox", "true", check=True)
    try:
        engine.skiff("wait", "selfexit", check=True)
        # No waiting for the gateway's periodic release: the start that wants the port frees it.
        engine.skiff("run", "-d", "--name", "taker", "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30",
                     check=True)
        assert f"80/tcp -> 127.0.0.1:{port}" in engine.skiff("port", "taker", check=True).stdout
    finally:
        engine.skiff("rm", "-f", "selfexit", "taker")
    assert skiff_rules() == []


def test_published_port_from_another_container_and_from_outside(engine: Engine) -> None:
    """A published port answers on the host's addresses: to a container on the bridge (through
    the bridge's gateway address, hairpin NAT) and to a peer outside the host (here a network
    namespace of the test's own, linked to the host by a veth pair)."""
    port = free_port()
    tag = os.getpid() % 10000
    ns, host_if, peer_if = f"skout{tag}", f"skvo{tag}", f"skvi{tag}"
    net = f"100.77.{tag % 250}"
    engine.skiff("run", "-d", "--name", "hairpin", "-h", "hairpin", "-p", f"{port}:8080", "busybox",
                 "httpd", "-f", "-p", "8080", "-h", "/etc", check=True)
    try:
        gateway = json.loads(engine.skiff("inspect", "hairpin", check=True).stdout)[0]["NetworkSettings"]["Gateway"]
        fetch(f"http://127.0.0.1:{port}/hostname")  # httpd listens
        # (busybox-static's wget crashes with -T: bound it with timeout instead)
        got = engine.skiff("run", "--rm", "busybox", "timeout", "10", "wget", "-qO-",
                           f"http://{gateway}:{port}/hostname", check=True).stdout
        assert got.strip() == "hairpin"
        for cmd in (["ip", "netns", "add", ns],
                    ["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if],
                    ["ip", "link", "set", peer_if, "netns", ns],
                    ["ip", "addr", "add", f"{net}.1/30", "dev", host_if],
                    ["ip", "link", "set", host_if, "up"],
                    ["ip", "-n", ns, "addr", "add", f"{net}.2/30", "dev", peer_if],
                    ["ip", "-n", ns, "link", "set", peer_if, "up"]):
            subprocess.run(cmd, check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, "busybox", "wget", "-qO-",
                              f"http://{net}.1:{port}/hostname"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "hairpin", out.stderr
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        engine.skiff("rm", "-f", "hairpin", check=True)
    assert skiff_rules() == []
