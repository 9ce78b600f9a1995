"""User-defined networks end to end: create/ls/inspect/rm, names and aliases by DNS, --internal,
``container:`` mode, and nothing left behind. All traffic stays inside the test's own networks
(no query for a name the embedded DNS does not know, so nothing is forwarded upstream)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

Skiff = Callable[..., subprocess.CompletedProcess[str]]


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _rules(mark: str) -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if mark in line]


def _inspect(skiff: Skiff, ref: str) -> dict[str, Any]:
    return json.loads(skiff("inspect", ref, check=True).stdout)[0]  # type: ignore[no-any-return]


def test_user_network_names_aliases_internal_and_container_mode(skiff: Skiff) -> None:
    tag = f"n{os.getpid() % 100000}"
    net, inet, web = f"{tag}-net", f"{tag}-int", f"{tag}-web"
    net_id = skiff("network", "create", "--label", "team=a", net, check=True).stdout.strip()
    inet_id = ""
    try:
        assert len(net_id) == 64 and f" br-{net_id[:12]}:" in _links()
        names = skiff("network", "ls", check=True).stdout
        for name in ("bridge", "host", "none", net):
            assert f" {name} " in names, names
        info = json.loads(skiff("network", "inspect", net, check=True).stdout)[0]
        assert info["Id"] == net_id and info["Labels"] == {"team": "a"} and info["IPAM"]["Config"]
        subnet = info["IPAM"]["Config"][0]["Subnet"]
        # Invalid input changes nothing.
        assert skiff("network", "create", net).returncode != 0
        assert skiff("network", "create", "--subnet", subnet, f"{tag}-x").returncode != 0
        assert f" {tag}-x " not in skiff("network", "ls").stdout

        skiff("run", "-d", "--name", web, "--network", net, "--network-alias", "webalias", "busybox", "sh", "-c",
              "mkdir -p /www && echo hello-net > /www/index.html && exec httpd -f -p 8080 -h /www", check=True)
        ip = _inspect(skiff, web)["NetworkSettings"]["IPAddress"]
        assert ip
        for host in (web, "webalias"):
            got = ""
            for _ in range(25):  # httpd may need a moment to listen
                r = skiff("run", "--rm", "--network", net, "busybox", "wget", "-qO-", f"http://{host}:8080/")
                got = r.stdout
                if "hello-net" in got:
                    break
                time.sleep(0.2)
            assert "hello-net" in got, r.stderr
        look = skiff("run", "--rm", "--network", net, "busybox", "nslookup", web, "127.0.0.11", check=True)
        assert ip in look.stdout
        resolv = skiff("run", "--rm", "--network", net, "busybox", "cat", "/etc/resolv.conf", check=True).stdout
        assert "nameserver 127.0.0.11" in resolv

        # container: mode shares the namespace.
        shared = skiff("run", "--rm", "--network", f"container:{web}", "busybox", "ip", "-o", "-4", "addr",
                       check=True).stdout
        assert f"inet {ip}/" in shared

        rm = skiff("network", "rm", net)
        assert rm.returncode != 0 and "active endpoints" in rm.stderr

        # network connect: a second interface on another network, reachable there by its alias.
        other = f"{tag}-oth"
        skiff("network", "create", other, check=True)
        try:
            skiff("network", "connect", "--alias", "webtoo", other, web, check=True)
            addrs = skiff("run", "--rm", "--network", f"container:{web}", "busybox", "ip", "-o", "-4", "addr",
                          check=True).stdout
            assert " eth1 " in addrs, addrs
            got = skiff("run", "--rm", "--network", other, "busybox", "wget", "-qO-", "http://webtoo:8080/")
            assert "hello-net" in got.stdout, got.stderr
            assert skiff("network", "rm", other).returncode != 0
            skiff("network", "disconnect", other, web, check=True)
            addrs = skiff("run", "--rm", "--network", f"container:{web}", "busybox", "ip", "-o", "-4", "addr",
                          check=True).stdout
            assert " eth1 " not in addrs
        finally:
            skiff("network", "rm", other)
        assert f" {other} " not in skiff("network", "ls").stdout
        assert f" {net} " in skiff("network", "ls").stdout

        inet_id = skiff("network", "create", "--internal", inet, check=True).stdout.strip()
        routes = skiff("run", "--rm", "--network", inet, "busybox", "ip", "route", check=True).stdout
        assert "default" not in routes and routes.strip()
        assert not any("MASQUERADE" in r for r in _rules(f"SK-{inet_id[:12]}"))
    finally:
        skiff("rm", "-f", web)
        skiff("network", "rm", net)
        if inet_id:
            skiff("network", "rm", inet)
    assert f" {net} " not in skiff("network", "ls").stdout
    for ident in (net_id, inet_id):
        if ident:
            assert f" br-{ident[:12]}:" not in _links()
            assert _rules(f"SK-{ident[:12]}") == []


def test_network_prune_and_unknown_network(skiff: Skiff) -> None:
    tag = f"p{os.getpid() % 100000}"
    skiff("network", "create", f"{tag}-a", check=True)
    r = skiff("run", "--rm", "--network", f"{tag}-nosuch", "busybox", "true")
    assert r.returncode == 125 and "not found" in r.stderr
    pruned = skiff("network", "prune", "-f", check=True).stdout
    assert f"{tag}-a" in pruned
    assert f" {tag}-a " not in skiff("network", "ls").stdout


def test_networks_are_isolated_from_each_other(skiff: Skiff) -> None:
    """As Docker's DOCKER-ISOLATION chains: a container on another network (or the default bridge)
    cannot connect to a server; one on the same network can."""
    tag = f"i{os.getpid() % 100000}"
    one, two, srv = f"{tag}-one", f"{tag}-two", f"{tag}-srv"
    skiff("network", "create", one, check=True)
    skiff("network", "create", two, check=True)
    try:
        skiff("run", "-d", "--name", srv, "--network", one, "busybox", "sh", "-c",
              "mkdir -p /www && echo hello-iso > /www/index.html && exec httpd -f -p 8080 -h /www", check=True)
        ip = _inspect(skiff, srv)["NetworkSettings"]["IPAddress"]
        # Not exec'd as PID 1 (which ignores timeout's signal): a dropped SYN gives up after 3 s.
        fetch = f"timeout 3 wget -qO- http://{ip}:8080/; echo exit=$?"
        got = ""
        for _ in range(25):  # httpd may need a moment to listen
            got = skiff("run", "--rm", "--network", one, "busybox", "sh", "-c", fetch).stdout
            if "hello-iso" in got:
                break
            time.sleep(0.2)
        assert "hello-iso" in got
        for other in (two, "bridge"):
            r = skiff("run", "--rm", "--network", other, "busybox", "sh", "-c", fetch)
            assert "hello-iso" not in r.stdout and "exit=0" not in r.stdout, (other, r.stdout, r.stderr)
    finally:
        skiff("rm", "-f", srv)
        skiff("network", "rm", one, two)
    assert f" {one} " not in skiff("network", "ls").stdout


def test_ipv6_network_from_the_cli(skiff: Skiff) -> None:
    """network create --ipv6: the container's IPv6 address and default route, shown by inspect, and
    the host reaches it over the ULA on the bridge."""
    if any(Path(f"/proc/sys/net/ipv6/conf/all/{k}").read_text().strip() == "1" for k in ("forwarding", "disable_ipv6")):
        pytest.skip("this host forwards IPv6 or has it disabled: skiff refuses IPv6 networks then")
    import socket

    tag = f"v{os.getpid() % 100000}"
    net, box = f"{tag}-v6", f"{tag}-box"
    bad = skiff("network", "create", "--ipv6", f"{tag}-bad")
    assert bad.returncode != 0 and "IPv6" in bad.stderr
    skiff("network", "create", "--ipv6", "--subnet", "10.252.9.0/24", "--subnet", "fd00:9:9::/64", net, check=True)
    try:
        info = json.loads(skiff("network", "inspect", net, check=True).stdout)[0]
        assert info["EnableIPv6"] is True
        assert {"Subnet": "fd00:9:9::/64", "Gateway": "fd00:9:9::1"} in info["IPAM"]["Config"]
        skiff("run", "-d", "--name", box, "--network", net, "busybox", "sh", "-c",
              "mkdir -p /www && echo hello-v6 > /www/index.html && exec httpd -f -p 8080 -h /www", check=True)
        settings = _inspect(skiff, box)["NetworkSettings"]
        ip6 = settings["GlobalIPv6Address"]
        assert ip6.startswith("fd00:9:9::") and settings["GlobalIPv6PrefixLen"] == 64
        assert settings["IPv6Gateway"] == "fd00:9:9::1"
        routes = skiff("exec", box, "ip", "-6", "route", check=True).stdout
        assert "default via fd00:9:9::1" in routes
        # the embedded DNS answers AAAA with the IPv6 address, A with the IPv4 one
        look = skiff("run", "--rm", "--network", net, "busybox", "nslookup", "-type=AAAA", box, "127.0.0.11",
                     check=True).stdout
        assert ip6 in look, look
        look = skiff("run", "--rm", "--network", net, "busybox", "nslookup", "-type=A", box, "127.0.0.11",
                     check=True).stdout
        assert settings["IPAddress"] in look and ip6 not in look, look
        got = b""
        for _ in range(50):  # bounded: httpd may need a moment (5 s)
            try:
                with socket.create_connection((ip6, 8080), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    while len(got) < 65536 and (chunk := s.recv(4096)):  # HTTP/1.0: until the server closes
                        got += chunk
                break
            except OSError:
                time.sleep(0.1)
        assert b"hello-v6" in got
    finally:
        skiff("rm", "-f", box)
        skiff("network", "rm", net)
    assert "fd00:9:9::" not in subprocess.run(["ip", "-6", "route"], capture_output=True, text=True).stdout
