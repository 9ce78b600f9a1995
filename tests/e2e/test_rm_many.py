"""`rm C1 C2 ...` in one call (RemoveContainers): Docker's output and semantics, and crash safety.

A service SIGKILLed in the middle of a batch (fault injection: SKIFF_CRASH_FILE, see
skiff.common.faults) leaves each container either whole (listed, removable again) or gone,
and nothing behind: no writable layer, bundle, cgroup, endpoint or veth.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.common.server import channel
from skiff.net.v1 import net_pb2, net_pb2_grpc
from tests.conftest import is_root
from tests.e2e.conftest import Engine, start_engine, stop_engine


def _ids(skiff) -> set[str]:
    return set(skiff("ps", "-aq", "--no-trunc", check=True).stdout.split())


def test_rm_many_prints_each_and_fails_each_like_docker(engine: Engine, skiff) -> None:
    a = skiff("create", "--name", "rmm-a", "busybox", "true", check=True).stdout.strip()
    b = skiff("create", "--name", "rmm-b", "busybox", "true", check=True).stdout.strip()
    child = skiff("create", "--name", "rmm-child", "busybox", "true", check=True).stdout.strip()
    parent = skiff("create", "--name", "rmm-parent", "--link", "rmm-child:db", "busybox", "true",
                   check=True).stdout.strip()
    running = skiff("run", "-d", "--name", "rmm-run", "busybox", "sleep", "60", check=True).stdout.strip()
    try:
        r = skiff("rm", "rmm-a", b[:12], "rmm-nosuch", "rmm-run", "rmm-child")
        assert r.returncode == 1, r
        assert r.stdout.splitlines() == ["rmm-a", b[:12], "rmm-child"]
        assert r.stderr.splitlines() == [
            "Error response from daemon: No such container: rmm-nosuch",
            f"Error response from daemon: You cannot remove a running container {running}. "
            "Stop the container before attempting removal or force remove",
        ]
        left = _ids(skiff)
        assert {a, b, child} & left == set()
        assert {running, parent} <= left
        assert "Up " in skiff("ps", "--filter", "name=rmm-run", check=True).stdout  # untouched
        # the link to the removed child went with it; the names are free again
        links = json.loads(skiff("inspect", "rmm-parent", check=True).stdout)[0]["HostConfig"]["Links"]
        assert not links
        again = skiff("create", "--name", "rmm-a", "busybox", "true", check=True).stdout.strip()
        # -f kills the running one
        r = skiff("rm", "-f", "rmm-run", "rmm-a", "rmm-parent")
        assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, ["rmm-run", "rmm-a", "rmm-parent"], "")
        assert {running, again, parent} & _ids(skiff) == set()
    finally:
        skiff("rm", "-f", "rmm-a", "rmm-b", "rmm-child", "rmm-parent", "rmm-run")


def test_rm_many_with_volumes_removes_anonymous_ones(engine: Engine, skiff) -> None:
    skiff("volume", "create", "rmm-named", check=True)
    try:
        anon = skiff("create", "-v", "/data", "busybox", "true", check=True).stdout.strip()
        named = skiff("create", "-v", "rmm-named:/data", "busybox", "true", check=True).stdout.strip()
        kept = skiff("create", "-v", "/data", "busybox", "true", check=True).stdout.strip()
        mounts = json.loads(skiff("inspect", anon, kept, check=True).stdout)
        anon_vol, kept_vol = (m["Mounts"][0]["Name"] for m in mounts)
        r = skiff("rm", "-v", anon, named)
        assert (r.returncode, r.stdout.split(), r.stderr) == (0, [anon, named], "")
        volumes = skiff("volume", "ls", "-q", check=True).stdout.split()
        assert anon_vol not in volumes and "rmm-named" in volumes and kept_vol in volumes
        r = skiff("rm", kept, "rmm-nosuch")  # without -v the anonymous volume stays, as Docker
        assert r.returncode == 1 and r.stdout.split() == [kept]
        assert kept_vol in skiff("volume", "ls", "-q", check=True).stdout.split()
        skiff("volume", "rm", kept_vol, check=True)
    finally:
        skiff("volume", "rm", "-f", "rmm-named")


# --- crash safety -----------------------------------------------------------------------------

POINTS = [
    ("execsvc", "execsvc:delete-tasks:mid"),
    ("netsvc", "netsvc:delete-endpoints:mid"),
    ("graphsvc", "graphsvc:delete-containers:mid-transaction"),
    ("graphsvc", "graphsvc:delete-containers:committed"),
    ("apiserver", "apiserver:remove-containers:tasks-deleted"),
    ("apiserver", "apiserver:remove-containers:endpoints-deleted"),
]


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[tuple[Engine, Path, str]]:
    if not is_root():
        pytest.skip("the end-to-end tier needs root (namespaces, cgroups, overlayfs)")
    base = tmp_path_factory.mktemp("skiff-rm-crash")
    bridge = f"skr{os.getpid() % 1000000}"
    cgroup_parent = f"skiff-e2e-rm-{os.getpid()}"
    crash_file = base / "crash-at"
    eng = start_engine(base, busybox_tar, env={"SKIFF_BRIDGE": bridge, "SKIFF_CGROUP_PARENT": cgroup_parent,
                                               "SKIFF_CRASH_FILE": str(crash_file)})
    try:
        yield eng, crash_file, cgroup_parent
    finally:
        crash_file.unlink(missing_ok=True)
        stop_engine(eng, base)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f" {bridge}:" not in links and f"master {bridge} " not in links, "bridge or veths left behind"
        cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent}") if p.is_dir()]
        assert not cgroups, f"cgroups left behind: {cgroups}"


def _until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize(("service", "point"), POINTS, ids=[p for _, p in POINTS])
def test_a_service_killed_mid_batch_leaves_each_container_whole_or_gone(
        crashy: tuple[Engine, Path, str], service: str, point: str) -> None:
    eng, crash_file, cgroup_parent = crashy
    sk = eng.skiff
    ids = [sk("create", "busybox", "true", check=True).stdout.strip() for _ in range(3)]
    exited = sk("run", "-d", "busybox", "true", check=True).stdout.strip()  # a bundle, a cgroup
    assert sk("wait", exited, check=True).stdout.strip() == "0"
    ids.append(exited)
    ids += [sk("run", "-d", "busybox", "sleep", "60", check=True).stdout.strip() for _ in range(2)]  # endpoints
    vol_ctr = sk("create", "-v", "/data", "busybox", "true", check=True).stdout.strip()
    volume = json.loads(sk("inspect", vol_ctr, check=True).stdout)[0]["Mounts"][0]["Name"]
    ids.append(vol_ctr)
    old_pid = eng.service_pid(service)

    crash_file.write_text(point)
    r = sk("rm", "-f", "-v", *ids, timeout=120)
    assert not crash_file.exists(), f"the crash point {point} was not reached: {r}"
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode != 0  # the service died under the call: not every container was removed
    def back() -> bool:
        try:
            return eng.service_pid(service) != old_pid
        except AssertionError:  # not yet restarted
            return False

    _until(back, f"{service} did not come back")

    def answers() -> bool:
        return sk("ps", "-aq", "--no-trunc").returncode == 0

    _until(answers, "the engine did not answer again")
    present = [cid for cid in ids if cid in _ids(sk)]
    for cid in present:  # whole: it inspects, and it is removable again
        assert sk("inspect", cid).returncode == 0
    if present:
        _until(lambda: sk("rm", "-f", "-v", *present).returncode == 0 or not set(present) & _ids(sk),
               f"could not remove {present} again")
    assert not set(ids) & _ids(sk)

    # nothing behind: writable layers (graphsvc sweeps orphans when it starts), bundles, cgroups, endpoints
    def layers() -> list[Path]:
        return [p for cid in ids for p in eng.data_root.glob(f"graph/*/containers/{cid}")]

    _until(lambda: not layers(), f"writable layers left behind: {layers()}")
    assert not [cid for cid in ids if (eng.exec_root / "containers" / cid).exists()], "bundles left behind"
    assert not [p for cid in ids for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent}/{cid}")], \
        "cgroups left behind"
    stub = net_pb2_grpc.NetworkServiceStub(channel(f"unix://{eng.exec_root}/netsvc.sock"))
    endpoints = stub.ListEndpoints(net_pb2.ListEndpointsRequest(), timeout=30).endpoints
    assert not [e.container_id for e in endpoints if e.container_id in ids], "endpoints left behind"
    volumes = sk("volume", "ls", "-q", check=True).stdout.split()
    if point == "graphsvc:delete-containers:committed":
        # the records went in the commit, the volumes after it: an unused anonymous volume, as
        # Docker leaves one, which `volume prune` removes
        sk("volume", "prune", "-f", check=True)
        volumes = sk("volume", "ls", "-q", check=True).stdout.split()
    assert volume not in volumes
