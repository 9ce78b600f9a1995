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
    return [line for line in out.splitlines() if prefix in line and "DNAT" in line]


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
