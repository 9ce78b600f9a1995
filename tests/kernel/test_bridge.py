"""The bridge driver against the real kernel: veths, addresses, NAT rules, reconciliation.

Root only. Each test uses its own data and exec roots, a bridge and chains of
its own names (``skt<pid>``, ``SKT<pid>*``), touches only addresses it made, and
checks that no bridge, veth, namespace or rule survives it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.common.errors import FailedPrecondition
from skiff.netsvc import netns
from skiff.netsvc.manager import EndpointManager
from skiff.netsvc.model import EndpointOptions, PortBinding
from skiff.netsvc.server import build_manager
from skiff.netsvc.store import EndpointStore

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="bridges, veths and iptables need root"),
]

BRIDGE = f"skt{os.getpid() % 100000}"  # its own, even beside another run of the suite
PREFIX = f"SKT{os.getpid() % 100000}"


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def rules() -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if PREFIX in line]


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    data, run = tmp_path / "data", tmp_path / "run"
    yield data, run
    # The test's managers stand for netsvc processes that have since stopped: let their
    # deletions in progress finish first (as a netsvc stop does).
    while MADE:
        MADE.pop().drain()
    # Whatever the test did: remove every endpoint and shut down as netsvc does.
    m = make(data, run)
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    m.close()
    for mp in reversed([mp for mp, _ in netns.mount_points() if mp.startswith(str(tmp_path) + "/")]):
        netns.umount(mp)
    assert f" {BRIDGE}:" not in links()
    assert rules() == []


#: Every manager a test made (drained by the fixture).
MADE: list[EndpointManager] = []


def make(data: Path, run: Path) -> EndpointManager:
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX)
    MADE.append(m)
    return m


def ns_run(path: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=10)


def test_two_endpoints_reach_each_other_and_delete_cleans(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    a = m.create_endpoint("a", "bridge", EndpointOptions(hostname="alpha"))
    b = m.create_endpoint("b", "bridge")
    assert a.ip_address != b.ip_address and a.gateway == b.gateway
    assert a.mac_address == "02:42:" + ":".join(f"{int(x):02x}" for x in a.ip_address.split("."))
    addr = ns_run(a.netns_path, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert f"{a.ip_address}/{a.prefix_length}" in addr
    assert f"default via {a.gateway}" in ns_run(a.netns_path, "ip", "route").stdout
    ping = ns_run(a.netns_path, "busybox", "ping", "-c1", "-W1", b.ip_address)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"{a.ip_address}\talpha\n" in a.hosts and "nameserver" in a.resolv_conf
    assert f" {BRIDGE}:" in links() and a.veth in links()
    m.delete_endpoint("a")
    assert not Path(a.netns_path).exists()  # at once; the veth goes in the background
    m.drain()
    assert a.veth not in links()
    m.delete_endpoint("b")


def test_addresses_are_never_handed_out_twice_across_a_restart(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    first = m.create_endpoint("one", "bridge")
    m2 = make(data, run)  # a netsvc restart: reconcile adopts the live endpoint
    assert [e.container_id for e in m2.list_endpoints()] == ["one"]
    second = m2.create_endpoint("two", "bridge")
    assert second.ip_address != first.ip_address
    m2.delete_endpoint("one")
    third = m2.create_endpoint("three", "bridge")  # round-robin: not the address just released
    assert third.ip_address not in (first.ip_address, second.ip_address)


def test_reconcile_removes_unrecorded_veths_and_lost_records(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    kept = m.create_endpoint("kept", "bridge")
    lost = m.create_endpoint("lost", "bridge")
    subprocess.run(["ip", "link", "del", lost.veth], check=True)  # lost behind our back
    orphan = "vethorphan1"
    subprocess.run(["ip", "link", "add", orphan, "master", BRIDGE, "type", "veth", "peer", "name", "vethorphan2"],
                   check=True)
    m2 = make(data, run)
    assert [e.container_id for e in m2.list_endpoints()] == ["kept"]
    assert orphan not in links() and lost.veth not in links() and kept.veth in links()


def test_published_ports_and_refusals(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FailedPrecondition, match="in use"):
            m.create_endpoint("c1", "bridge", EndpointOptions(port_bindings=(PortBinding("127.0.0.1", port, 80),)))
        assert m.list_endpoints() == [] and not (run / "netns" / "c1").exists()
    e = m.create_endpoint("c1", "bridge", EndpointOptions(
        port_bindings=(PortBinding("127.0.0.1", port, 80), PortBinding("", 0, 81, "udp"))))
    assert e.ports[0] == PortBinding("127.0.0.1", port, 80, "tcp") and e.ports[1].host_port > 0
    assert any(f"--dport {port} -j DNAT --to-destination {e.ip_address}:80" in r for r in rules())
    with pytest.raises(FailedPrecondition, match="already allocated"):
        m.create_endpoint("c2", "bridge", EndpointOptions(port_bindings=(PortBinding("", port, 80),)))
    m.delete_endpoint("c1")
    assert not any("-j DNAT" in r for r in rules())  # at once, as Docker's (the veth goes later)


def test_published_port_reaches_the_container_on_127_0_0_1(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = m.create_endpoint("web", "bridge", EndpointOptions(port_bindings=(PortBinding("127.0.0.1", port, 8080),)))
    server = subprocess.Popen(["nsenter", f"--net={e.netns_path}", "busybox", "nc", "-l", "-p", "8080", "-e",
                               "echo", "hello-from-ns"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        got = b""
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    got = c.recv(100)
                    break
            except OSError:
                subprocess.run(["sleep", "0.1"])
        assert got.strip() == b"hello-from-ns"
    finally:
        server.kill()
        server.wait(5)


def test_a_bridge_removed_behind_our_back_is_made_again(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = make(data, run)
    m.create_endpoint("a", "bridge")
    subprocess.run(["ip", "link", "del", BRIDGE], check=True)
    b = m.create_endpoint("b", "bridge")
    assert f" {BRIDGE}:" in links() and b.veth in links()
    assert any(f"-o {BRIDGE} -j ACCEPT" in r for r in rules())


def _ping(e_from: str, to: str) -> subprocess.CompletedProcess[str]:
    return ns_run(e_from, "busybox", "ping", "-c1", "-W2", to)


def test_delete_then_create_at_once_works_and_never_reuses_a_held_address(roots: tuple[Path, Path]) -> None:
    """A delete returns before the kernel has let go of the veth: the next endpoint, made at once
    (another container, or the same one started again), works and gets another address."""
    data, run = roots
    m = make(data, run)
    a = m.create_endpoint("a", "bridge")
    m.delete_endpoint("a", release=True)  # a stop
    b = m.create_endpoint("b", "bridge")
    a2 = m.create_endpoint("a", "bridge")  # the same container started again, at the same netns path
    assert len({a.ip_address, b.ip_address, a2.ip_address}) == 3
    assert len({a.veth, a2.veth}) == 2 and a2.netns_path == a.netns_path
    for e in (b, a2):
        ping = _ping(e.netns_path, e.gateway)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    ping = _ping(a2.netns_path, b.ip_address)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    m.drain()
    assert a.veth not in links() and a.ip_address not in m.drivers["bridge"].ipam.allocated  # type: ignore
    assert a2.veth in links() and b.veth in links()


def test_the_background_cleanup_finishes_on_its_own(roots: tuple[Path, Path]) -> None:
    """Without drain(): the cleanup thread deletes the veth and then gives the address back."""
    data, run = roots
    m = make(data, run)
    e = m.create_endpoint("c1", "bridge", EndpointOptions(port_bindings=(PortBinding("127.0.0.1", 0, 80),)))
    m.delete_endpoint("c1")
    assert not Path(e.netns_path).exists() and m.list_endpoints() == []
    # Journaled with the record's removal, in the same write (finished at start-up after a crash).
    assert EndpointStore(data / "network" / "endpoints.json").load_cleanup() == [e.veth]
    ipam = m.drivers["bridge"].ipam  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (e.veth in links() or e.ip_address in ipam.allocated) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert e.veth not in links() and e.ip_address not in ipam.allocated
    assert not any("-j DNAT" in r for r in rules())


def test_close_waits_for_the_cleanup(roots: tuple[Path, Path]) -> None:
    """A netsvc stop right after deletes: nothing is left once close() returns, without waiting."""
    data, run = roots
    m = make(data, run)
    made = [m.create_endpoint(f"c{i}", "bridge") for i in range(5)]
    for e in made:
        m.delete_endpoint(e.container_id)
    m.close()
    out = links()
    assert not any(e.veth in out for e in made) and f" {BRIDGE}:" not in out and rules() == []
    assert json.loads((data / "network" / "ipam.json").read_text())["allocated"] == {}


def test_a_bridge_endpoint_takes_a_pooled_namespace_and_reaches_its_gateway(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX, netns_pool=1)
    MADE.append(m)
    try:
        assert m.pool is not None
        m.create_endpoint("warm", "bridge")  # the bridge is made (ip_forward on), the pool refilled after
        assert m.pool.wait_full(30)
        taken = m.pool.taken
        e = m.create_endpoint("c1", "bridge")
        assert m.pool.taken == taken + 1
        out = ns_run(e.netns_path, "ip", "-o", "addr").stdout
        assert f"inet {e.ip_address}/" in out and "inet 127.0.0.1/8" in out
        ping = ns_run(e.netns_path, "busybox", "ping", "-c1", "-W5", e.gateway)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        for cid in ("warm", "c1"):
            m.delete_endpoint(cid)
    finally:
        m.close()
