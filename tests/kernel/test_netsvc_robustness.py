"""netsvc under churn and under SIGKILL: nothing leaks, no address is handed out twice.

Root only. Each test uses its own data and exec roots and a bridge of its own
name (``skr<pid>``, chains ``SKIFF-SKR<pid>*``), touches only what it made, and
checks that no bridge, veth, namespace, mount or rule survives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from skiff.common.server import channel
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.netsvc import netns
from skiff.netsvc.server import build_manager, chain_prefix

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="bridges, veths and iptables need root"),
]

BRIDGE = f"skr{os.getpid() % 100000}"
PREFIX = chain_prefix(BRIDGE)
CYCLES = 100
BUDGET = 120.0


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def veths() -> set[str]:
    """Veths that could be ours: on our bridge or on none. Engines running beside the test
    (other test runs, Docker) keep theirs on their own bridges."""
    found = set()
    for line in links().splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        words = line.split()
        master = words[words.index("master") + 1] if "master" in words else BRIDGE
        if name.startswith("veth") and master == BRIDGE:
            found.add(name)
    return found


def rules() -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if PREFIX in line or BRIDGE in line]


def mounts_under(root: Path) -> list[str]:
    return [mp for mp, _ in netns.mount_points() if mp == str(root) or mp.startswith(str(root) + "/")]


def allocated(data: Path) -> dict[str, str]:
    path = data / "network" / "ipam.json"
    return json.loads(path.read_text()).get("allocated", {}) if path.exists() else {}


def new_veths(before: set[str], deadline: float = 3.0) -> set[str]:
    """Veths that appeared since ``before``; a namespace's peer goes asynchronously, so wait a little."""
    end = time.monotonic() + deadline
    while (left := veths() - before) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def assert_nothing_left(tmp_path: Path, data: Path, run: Path, before: set[str]) -> None:
    assert new_veths(before) == set()
    assert f" {BRIDGE}:" not in links()
    assert rules() == []
    assert mounts_under(tmp_path) == []
    netns_dir = run / "netns"
    assert not netns_dir.is_dir() or list(netns_dir.iterdir()) == []
    assert allocated(data) == {}


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Path, Path, set[str]]]:
    data, run = tmp_path / "data", tmp_path / "run"
    before = veths()
    yield data, run, before
    # Whatever the test did (or failed to do): remove every endpoint and shut down as netsvc does.
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX)
    for e in m.list_endpoints():
        m.delete_endpoint(e.container_id)
    m.close()
    for mp in reversed(mounts_under(tmp_path)):
        netns.umount(mp)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    assert f" {BRIDGE}:" not in links()
    assert rules() == []


def test_create_delete_cycles_leave_nothing_behind(tmp_path: Path, roots: tuple[Path, Path, set[str]]) -> None:
    data, run, before = roots
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX)
    start = time.monotonic()
    seen: set[str] = set()
    for i in range(CYCLES):
        elapsed = time.monotonic() - start
        if elapsed > BUDGET:
            pytest.fail(f"{i} of {CYCLES} create/delete cycles took {elapsed:.0f}s, over the {BUDGET:.0f}s budget")
        e = m.create_endpoint(f"cycle{i}", "bridge")
        assert e.veth in links() and Path(e.netns_path).exists()
        seen.add(e.veth)
        m.delete_endpoint(f"cycle{i}")
        assert e.veth not in veths() and not Path(e.netns_path).exists()
    assert m.list_endpoints() == [] and len(seen) == CYCLES
    m.close()
    assert_nothing_left(tmp_path, data, run, before)


class Netsvc:
    def __init__(self, tmp_path: Path, data: Path, run: Path):
        self.sock = tmp_path / "netsvc.sock"
        self.log = open(tmp_path / "netsvc.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skiff.netsvc", "-H", f"unix://{self.sock}", "--data-root", str(data),
             "--exec-root", str(run), "--bridge", BRIDGE], stdout=self.log, stderr=self.log)
        self.channel = channel(f"unix://{self.sock}")
        self.stub = net_pb2_grpc.NetworkServiceStub(self.channel)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop(signal.SIGKILL)
            pytest.fail(f"netsvc did not serve within 30s: {(tmp_path / 'netsvc.log').read_text()[-2000:]}")

    def create(self, cid: str, timeout: float = 30) -> net_pb2.Endpoint:
        req = net_pb2.CreateEndpointRequest(container_id=cid, network_mode="bridge")
        return self.stub.CreateEndpoint(req, timeout=timeout).endpoint

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self.channel.close()
        self.log.close()
        return rc


def test_sigkill_mid_create_then_restart_cleans_up(tmp_path: Path, roots: tuple[Path, Path, set[str]]) -> None:
    data, run, before = roots
    addresses: list[str] = []
    svc = Netsvc(tmp_path, data, run)
    try:
        for i in range(3):
            addresses.append(svc.create(f"pre{i}").ip_address)
        box: list[object] = []

        def inflight() -> None:
            try:
                box.append(svc.create("inflight", timeout=10))
            except grpc.RpcError as err:
                box.append(err)

        t = threading.Thread(target=inflight)
        t.start()
        time.sleep(0.004)
    finally:
        svc.stop(signal.SIGKILL)
    t.join(15)
    assert not t.is_alive(), "the in-flight CreateEndpoint did not return after SIGKILL"
    if box and isinstance(box[0], net_pb2.Endpoint):
        addresses.append(box[0].ip_address)

    svc = Netsvc(tmp_path, data, run)
    try:
        reported = svc.stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=10).endpoints
        ids = {e.container_id for e in reported}
        assert {"pre0", "pre1", "pre2"} <= ids <= {"pre0", "pre1", "pre2", "inflight"}
        live = [e.ip_address for e in reported]
        assert len(set(live)) == len(live)
        # A create after the restart must not reuse an address still held by a live endpoint.
        addresses.append(svc.create("post").ip_address)
        assert len(set(addresses)) == len(addresses), f"an address was handed out twice: {addresses}"
        for cid in sorted(ids | {"inflight", "post"}):
            svc.stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id=cid), timeout=10)
        assert list(svc.stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=10).endpoints) == []
    finally:
        rc = svc.stop(signal.SIGTERM)
    assert rc == 0, (tmp_path / "netsvc.log").read_text()[-2000:]
    assert_nothing_left(tmp_path, data, run, before)
