"""netsvc's pool of network namespaces made ahead of time, against the real kernel.

Root only. A pooled namespace is held by descriptors of netsvc, never by a mount: the tests
check that one handed out is the one pooled, that it is set up as a fresh one, and that
nothing keeps any of them alive once netsvc is gone (closed, or SIGKILLed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from skiff.common.server import channel
from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.netsvc import netns
from skiff.netsvc.server import build_manager

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and mounts need root"),
]


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    data, run = tmp_path / "data", tmp_path / "run"
    yield data, run
    leftovers = [mp for mp, _ in netns.mount_points() if mp.startswith(str(tmp_path) + "/")]
    for mp in reversed(leftovers):
        netns.umount(mp)
    assert leftovers == []


def netns_fds(pid: int | str = "self") -> dict[int, int]:
    """The process's descriptors that are network namespaces: fd -> namespace inode."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            out[int(fd)] = int(target[5:-1])
    return out


def holders(inodes: set[int]) -> list[str]:
    """Anything on the host that still holds one of these namespaces: a task, a descriptor, a mount."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if int(os.readlink(f"/proc/{pid}/ns/net")[5:-1]) in inodes:
                found.append(f"task {pid}")
            found += [f"fd {fd} of {pid}" for fd, ino in netns_fds(pid).items() if ino in inodes]
        except (OSError, ValueError):
            continue  # gone meanwhile
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f
                  if line.split()[3].startswith("net:[") and int(line.split()[3][5:-1]) in inodes]
    return found


def wait_for(predicate, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def lo_line(path: str) -> str:
    out = subprocess.run(["nsenter", f"--net={path}", "ip", "-o", "addr", "show", "dev", "lo"],
                         capture_output=True, text=True, check=True).stdout
    return out


def test_a_none_endpoint_gets_a_pooled_namespace_set_up_as_a_fresh_one(roots: tuple[Path, Path]) -> None:
    data, run = roots
    before = set(netns_fds())
    m = build_manager(data, run, netns_pool=2)
    try:
        assert m.pool is not None and m.pool.wait_full(30)
        pooled = {ino for fd, ino in netns_fds().items() if fd not in before}
        assert len(pooled) == 2 and os.stat("/proc/self/ns/net").st_ino not in pooled
        e = m.create_endpoint("c1", "none")
        assert os.stat(e.netns_path).st_ino in pooled  # bind-mounted from the pool
        assert m.pool.taken == 1
        assert "inet 127.0.0.1/8" in lo_line(e.netns_path)
        links = subprocess.run(["nsenter", f"--net={e.netns_path}", "ip", "-o", "link"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0] and ",UP" in links[0]
        # The pool is refilled in the background; the taken one is no longer held by the pool.
        wait_for(lambda: m.pool is not None and m.pool.ready() == 2, "the pool to be refilled")
        m.delete_endpoint("c1")
    finally:
        m.close()
    assert set(netns_fds()) <= before  # close() let every pooled namespace go
    assert holders(pooled) == []


def test_an_empty_pool_falls_back_to_a_fresh_namespace(roots: tuple[Path, Path]) -> None:
    data, run = roots
    m = build_manager(data, run, netns_pool=1)
    try:
        assert m.pool is not None and m.pool.wait_full(30)
        m.pool.invalidate()  # (as when the host's ip_forward changes) the pooled one is dropped
        e = m.create_endpoint("c1", "none")
        assert m.pool.missed >= 1 and "inet 127.0.0.1/8" in lo_line(e.netns_path)
        m.delete_endpoint("c1")
    finally:
        m.close()


def test_pool_size_zero_makes_nothing_ahead(roots: tuple[Path, Path]) -> None:
    data, run = roots
    before = set(netns_fds())
    m = build_manager(data, run, netns_pool=0)
    try:
        e = m.create_endpoint("c1", "none")
        assert set(netns_fds()) == before and "inet 127.0.0.1/8" in lo_line(e.netns_path)
        m.delete_endpoint("c1")
    finally:
        m.close()


def _start(tmp_path: Path, data: Path, run: Path, size: int) -> tuple[subprocess.Popen[bytes], grpc.Channel]:
    sock = tmp_path / "netsvc.sock"
    env = dict(os.environ, SKIFF_NETNS_POOL=str(size), SKIFF_BRIDGE=f"skp{os.getpid() % 100000}")
    with open(tmp_path / "netsvc.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skiff.netsvc", "-H", f"unix://{sock}", "--data-root",
                                 str(data), "--exec-root", str(run)], stdout=log, stderr=log, env=env)
    ch = channel(f"unix://{sock}")
    try:
        grpc.channel_ready_future(ch).result(timeout=30)
    except grpc.FutureTimeoutError:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"netsvc did not serve: {(tmp_path / 'netsvc.log').read_text()[-2000:]}")
    return proc, ch


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_nothing_holds_the_pool_after_netsvc_is_gone(tmp_path: Path, roots: tuple[Path, Path], sig: int) -> None:
    """netsvc's pooled namespaces (3, from $SKIFF_NETNS_POOL) die with it, even by SIGKILL; the
    next netsvc starts clean and its endpoints work."""
    data, run = roots
    proc, ch = _start(tmp_path, data, run, 3)
    try:
        wait_for(lambda: len(netns_fds(proc.pid)) == 3, "netsvc to fill its pool of 3")
        pooled = set(netns_fds(proc.pid).values())
        stub = net_pb2_grpc.NetworkServiceStub(ch)
        e = stub.CreateEndpoint(net_pb2.CreateEndpointRequest(container_id="kept", network_mode="none"),
                                timeout=30).endpoint
        assert os.stat(e.netns_path).st_ino in pooled
        pooled.discard(os.stat(e.netns_path).st_ino)
    finally:
        ch.close()
        proc.send_signal(sig)
        rc = proc.wait(30)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    assert holders(pooled) == []  # the kernel has nothing left of them to free later
    assert netns.mounted_under(run / "netns") == {"kept"}  # the endpoint's own namespace outlives netsvc
    proc, ch = _start(tmp_path, data, run, 3)
    try:
        stub = net_pb2_grpc.NetworkServiceStub(ch)
        ids = [x.container_id for x in stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=10).endpoints]
        assert ids == ["kept"]
        assert sorted(p.name for p in (run / "netns").iterdir()) == ["kept"]
        stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id="kept"), timeout=10)
    finally:
        ch.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not (run / "netns" / "kept").exists()
