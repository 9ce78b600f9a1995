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
from skiff.netsvc.model import EndpointOptions, PortBinding
from skiff.netsvc.server import build_manager, chain_prefix
from skiff.netsvc.store import EndpointStore

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
    """Host-side veths on the test's bridge (a veth is made on it in one request; other engines'
    veths on this host, made by tests running beside this one, are not ours to count)."""
    return {line.split(":")[1].strip().split("@")[0] for line in links().splitlines()
            if line.split(":")[1].strip().startswith("veth") and f" master {BRIDGE} " in line}


#: Chains of the user networks a test made (``SK-<12 hex>``), checked as well.
NET_CHAINS: list[str] = []


def rules() -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if PREFIX in line or BRIDGE in line or any(c in line for c in NET_CHAINS)]


def mounts_under(root: Path) -> list[str]:
    return [mp for mp, _ in netns.mount_points() if mp == str(root) or mp.startswith(str(root) + "/")]


def allocated(data: Path) -> dict[str, str]:
    """Every allocation of every pool (the default bridge's and the user networks')."""
    out: dict[str, str] = {}
    for path in (data / "network").glob("ipam*.json"):
        out.update(json.loads(path.read_text()).get("allocated", {}))
    return out


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
    if m.networks is not None:
        m.networks.prune()
    m.close()
    NET_CHAINS.clear()
    for mp in reversed(mounts_under(tmp_path)):
        netns.umount(mp)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    assert f" {BRIDGE}:" not in links()
    assert rules() == []


def test_create_delete_cycles_leave_nothing_behind(tmp_path: Path, roots: tuple[Path, Path, set[str]]) -> None:
    """Bridge endpoints with a published port (the same host port every time: it must be freed),
    on the default bridge and a user network (so the isolation chains are in play), three alive
    at a time, half of them released as at a stop and then removed as at rm."""
    data, run, before = roots
    m = build_manager(data, run, bridge=BRIDGE, chain_prefix=PREFIX)
    assert m.networks is not None
    net = m.networks.create("cycles").record
    NET_CHAINS.append(f"SK-{net.id[:12]}")
    start = time.monotonic()
    seen: set[str] = set()
    live: list[str] = []
    port = 18000 + os.getpid() % 1000
    for i in range(CYCLES):
        elapsed = time.monotonic() - start
        if elapsed > BUDGET:
            pytest.fail(f"{i} of {CYCLES} create/delete cycles took {elapsed:.0f}s, over the {BUDGET:.0f}s budget")
        opts = EndpointOptions(container_name=f"c{i}", port_bindings=(PortBinding("", port + i % 3, 80, "tcp"),))
        e = m.create_endpoint(f"cycle{i}", "bridge" if i % 2 else "cycles", opts)
        assert e.veth in links() and Path(e.netns_path).exists() and e.ports[0].host_port == port + i % 3
        seen.add(e.veth)
        live.append(f"cycle{i}")
        addresses = [x.ip_address for x in m.list_endpoints()]
        assert len(addresses) == len(set(addresses)) == len(live), f"an address twice: {addresses}"
        if len(live) == 3:
            gone = live.pop(0)
            old = m.get_endpoint(gone)
            if i % 4 < 2:
                m.delete_endpoint(gone, release=True)  # a stop
            m.delete_endpoint(gone)
            assert not Path(old.netns_path).exists()  # at once; the veth goes in the background
            if i % 5 == 0:
                m.drain()
                assert old.veth not in veths()
    for cid in live:
        m.delete_endpoint(cid)
    assert m.list_endpoints() == [] and len(seen) == CYCLES
    assert any(f"{PREFIX}-ISOLATION-2 -o {net.bridge} -j DROP" in r for r in rules())
    m.networks.remove("cycles")
    m.close()
    assert_nothing_left(tmp_path, data, run, before)


@pytest.mark.parametrize("step", ["allocated", "netns", "veth", "configured", "rules"])
def test_sigkill_at_each_step_of_a_create_leaves_nothing(tmp_path: Path, roots: tuple[Path, Path, set[str]],
                                                          step: str) -> None:
    """netsvc dies (SIGKILL, injected) at each step of a bridge endpoint with a published port:
    the restart removes what the step made, and no address is handed out twice."""
    data, run, before = roots
    svc = Netsvc(tmp_path, data, run)
    try:
        kept = svc.create("kept").ip_address
    finally:
        svc.stop(signal.SIGTERM)
    svc = Netsvc(tmp_path, data, run, crash_at=step)
    with pytest.raises(grpc.RpcError):
        svc.create("doomed", ports=True)
    assert svc.proc.wait(30) == -signal.SIGKILL
    svc.stop(signal.SIGKILL)
    svc = Netsvc(tmp_path, data, run)
    try:
        ids = [e.container_id for e in svc.stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=10).endpoints]
        assert ids == ["kept"]
        assert set(allocated(data)) == {kept}
        assert not any("-j DNAT" in r for r in rules()), rules()
        assert new_veths(before) == {_veth_of(data, "kept")}
        assert sorted(p.name for p in (run / "netns").iterdir()) == ["kept"]
        again = svc.create("doomed", ports=True)
        assert again.ip_address != kept and again.ports[0].host_port == PORT
        for cid in ("kept", "doomed"):
            svc.stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id=cid), timeout=10)
    finally:
        rc = svc.stop(signal.SIGTERM)
    assert rc == 0, (tmp_path / "netsvc.log").read_text()[-2000:]
    assert_nothing_left(tmp_path, data, run, before)


def _veth_of(data: Path, cid: str) -> str:
    return EndpointStore(data / "network" / "endpoints.json").load()[cid].veth


PORT = 19000 + os.getpid() % 1000


class Netsvc:
    def __init__(self, tmp_path: Path, data: Path, run: Path, crash_at: str = ""):
        self.sock = tmp_path / "netsvc.sock"
        self.log = open(tmp_path / "netsvc.log", "ab")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k != "SKIFF_NETSVC_CRASH_AT"}
        if crash_at:
            env["SKIFF_NETSVC_CRASH_AT"] = crash_at
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skiff.netsvc", "-H", f"unix://{self.sock}", "--data-root", str(data),
             "--exec-root", str(run), "--bridge", BRIDGE], stdout=self.log, stderr=self.log, env=env)
        self.channel = channel(f"unix://{self.sock}")
        self.stub = net_pb2_grpc.NetworkServiceStub(self.channel)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop(signal.SIGKILL)
            pytest.fail(f"netsvc did not serve within 30s: {(tmp_path / 'netsvc.log').read_text()[-2000:]}")

    def create(self, cid: str, timeout: float = 30, ports: bool = False) -> net_pb2.Endpoint:
        req = net_pb2.CreateEndpointRequest(container_id=cid, network_mode="bridge")
        if ports:
            req.port_bindings.add(host_port=PORT, container_port=80, protocol="tcp")
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


def test_sigkill_during_the_background_cleanup_is_finished_at_restart(
        tmp_path: Path, roots: tuple[Path, Path, set[str]]) -> None:
    """DeleteEndpoint returns before the veth is deleted; netsvc dies (SIGKILL, injected) before
    its cleanup thread deletes it. A process still in the namespace keeps the veth alive (the
    kernel would otherwise take it with the namespace): the restart deletes it, from the journal,
    before it hands out any address."""
    data, run, before = roots
    svc = Netsvc(tmp_path, data, run, crash_at="cleanup")
    holder = None
    try:
        e = svc.create("held", ports=True)
        veth = _veth_of(data, "held")
        holder = subprocess.Popen(["nsenter", f"--net={e.netns_path}", "sleep", "120"])
        ours = os.readlink("/proc/self/ns/net")
        end = time.monotonic() + 10
        while time.monotonic() < end and _netns_of(holder.pid) in ("", ours):
            time.sleep(0.02)
        assert _netns_of(holder.pid) not in ("", ours)
        try:  # the cleanup thread may kill netsvc before the answer is sent
            svc.stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id="held"), timeout=10)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert svc.proc.wait(30) == -signal.SIGKILL
        svc.stop(signal.SIGKILL)
        assert veth in veths()  # the cleanup did not happen
        assert EndpointStore(data / "network" / "endpoints.json").load_cleanup() == [veth]
        svc = Netsvc(tmp_path, data, run)
        assert f" {veth}@" not in links()  # on the bridge or not
        assert list(svc.stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=10).endpoints) == []
        assert allocated(data) == {} and not any("-j DNAT" in r for r in rules())
        again = svc.create("again", ports=True)
        assert again.ports[0].host_port == PORT
        svc.stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id="again"), timeout=10)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        rc = svc.stop(signal.SIGTERM)
    assert rc == 0, (tmp_path / "netsvc.log").read_text()[-2000:]
    assert veths() - before == set()  # a stop waits for the cleanup: no grace period needed
    assert_nothing_left(tmp_path, data, run, before)


def _netns_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""
