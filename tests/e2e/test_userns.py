"""`skiffd --userns-remap`: container root is an unprivileged host uid; the layers are idmapped, not copied."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Engine, start_engine, stop_engine

BASE_ID = 300000
SIZE = 65536


@pytest.fixture(scope="module")
def remapped(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path, engine: Engine) -> Iterator[Engine]:
    base = tmp_path_factory.mktemp("skiff-userns")
    (base / "subuid").write_text(f"skiffremaptest:{BASE_ID}:{SIZE}\n")
    (base / "subgid").write_text(f"skiffremaptest:{BASE_ID}:{SIZE}\n")
    env = {"SKIFF_BRIDGE": f"sku{os.getpid() % 1000000}", "SKIFF_CGROUP_PARENT": f"skiff-userns-{os.getpid()}",
           "SKIFF_SUBUID_FILE": str(base / "subuid"), "SKIFF_SUBGID_FILE": str(base / "subgid")}
    eng = start_engine(base, busybox_tar, ["--userns-remap", "skiffremaptest"], env)
    try:
        yield eng
    finally:
        stop_engine(eng, base)


def _host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_container_root_is_an_unprivileged_host_uid(remapped: Engine) -> None:
    sk = remapped.skiff
    cid = sk("run", "-d", "--network", "none", "busybox", "sh", "-c",
             "touch /made-here; echo hi > /tmp/x; sleep 300", check=True).stdout.strip()
    try:
        r = sk("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c '%u %U' /etc/passwd /made-here",
               check=True)
        lines = r.stdout.splitlines()
        assert lines[0] == "0"  # root inside
        assert lines[1].split() == ["0", str(BASE_ID), str(SIZE)]
        assert lines[2:] == ["0 root", "0 root"]  # the image's files and its own: owned by container root
        pid = int(sk("inspect", "--format", "{{.State.Pid}}", cid, check=True).stdout)
        assert _host_uid(pid) == BASE_ID  # ... and BASE_ID on the host
        # what the container wrote is stored as on-disk root (idmapped), never as BASE_ID
        made = [p for p in (remapped.data_root / "graph").rglob("made-here")]
        assert made and all(p.stat().st_uid == 0 for p in made), made
        # container root is not host root: making a device node needs CAP_MKNOD on the host
        # (allowed without the remap, see test_devices), and host-owned files are not its own
        r = sk("exec", cid, "sh", "-c", "mknod /tmp/null2 c 1 3 && echo made; echo x >> /etc/hostname && echo wrote")
        assert "made" not in r.stdout and "Operation not permitted" in r.stderr, r
        assert "wrote" not in r.stdout, r
        # but it may still listen on a low port in its network namespace
        r = sk("exec", cid, "sh", "-c", "nc -l -p 80 & sleep 1; "
               "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c ':0050 [0-9A-F:]* 0A '; kill $!")
        assert r.stdout.split()[:1] == ["1"], r
    finally:
        sk("rm", "-f", cid)


def test_default_network_and_a_non_root_user(remapped: Engine) -> None:
    r = remapped.skiff("run", "--rm", "-u", "1000:1000", "busybox", "sh", "-c",
                       "id -u; cat /proc/self/uid_map; touch /tmp/mine; stat -c %u /tmp/mine")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "1000" and lines[1].split() == ["0", str(BASE_ID), str(SIZE)] and lines[2] == "1000"


def test_host_namespaces_and_privileged_are_refused(remapped: Engine) -> None:
    for flags, message in ((["--privileged"], "privileged mode is incompatible with user namespaces"),
                           (["--network", "host"], "cannot share the host's network namespace"),
                           (["--pid", "host"], "cannot share the host PID namespace")):
        r = remapped.skiff("run", "--rm", *flags, "busybox", "true")
        assert r.returncode != 0 and message in r.stderr, (flags, r.stderr)


def test_userns_host_runs_a_container_without_the_remap(remapped: Engine) -> None:
    """`--userns=host` (Docker's one per-container value): root is host root, and what the remap
    refuses (--privileged, the host's network and PID namespaces) is allowed again."""
    sk = remapped.skiff
    cid = sk("run", "-d", "--userns", "host", "--network", "none", "busybox", "sh", "-c",
             "touch /made-here; sleep 300", check=True).stdout.strip()
    try:
        r = sk("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c '%u' /etc/passwd /made-here",
               check=True)
        lines = r.stdout.splitlines()
        assert lines[0] == "0" and lines[1].split() == ["0", "0", "4294967295"], r.stdout  # the host's map
        assert lines[2:] == ["0", "0"]
        pid = int(sk("inspect", "--format", "{{.State.Pid}}", cid, check=True).stdout)
        assert _host_uid(pid) == 0
        assert sk("inspect", "--format", "{{.HostConfig.UsernsMode}}", cid, check=True).stdout.strip() == "host"
        # host root's capabilities count: a device node can be made (refused under the remap)
        r = sk("exec", cid, "sh", "-c", "mknod /tmp/null2 c 1 3 && echo made")
        assert "made" in r.stdout, r
    finally:
        sk("rm", "-f", cid)
    for flags in (["--privileged"], ["--network", "host"], ["--pid", "host"]):
        r = sk("run", "--rm", "--userns=host", *flags, "busybox", "sh", "-c", "cat /proc/self/uid_map")
        assert r.returncode == 0 and r.stdout.split() == ["0", "0", "4294967295"], (flags, r.stderr)
    # other containers of the engine are still remapped
    r = sk("run", "--rm", "--network", "none", "busybox", "cat", "/proc/self/uid_map", check=True)
    assert r.stdout.split() == ["0", str(BASE_ID), str(SIZE)]


def test_userns_other_values_are_refused(remapped: Engine) -> None:
    sk = remapped.skiff
    before = sk("ps", "-aq", check=True).stdout
    for value in ("private", "container:x", "bogus"):
        r = sk("create", "--userns", value, "busybox", "true")
        assert r.returncode != 0 and "--userns: invalid USER mode" in r.stderr, (value, r.stderr)
    assert sk("ps", "-aq", check=True).stdout == before  # nothing half-made
