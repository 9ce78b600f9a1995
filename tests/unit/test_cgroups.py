"""cgroup back-ends on fixture directories: no root, no real cgroupfs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skiff.common.errors import Internal
from skiff.execsvc.cgroups import CgroupV1, CgroupV2, parse_mountinfo


class FixtureV2(CgroupV2):
    """On a real cgroupfs rmdir works with the interface files present; here they are plain files."""

    def _rmdir(self, path: Path) -> bool:
        if (path / "cgroup.procs").exists() and (path / "cgroup.procs").read_text().strip():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True


class FixtureV1(CgroupV1):
    def _rmdir(self, path: Path) -> bool:
        return FixtureV2._rmdir(self, path)  # type: ignore[arg-type]


@pytest.fixture
def v2root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    return tmp_path


def _seed_parent(root: Path) -> None:
    """What the kernel shows in a new child group: the parent's controllers become available."""
    parent = root / "skiff"
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.controllers").write_text("memory pids\n")
    (parent / "cgroup.subtree_control").write_text("")


def test_v2_create_enables_controllers_and_writes_limits(v2root: Path) -> None:
    _seed_parent(v2root)
    cg = FixtureV2(v2root)
    procs = cg.create("c1", memory_limit=64 << 20, pids_limit=100)
    d = v2root / "skiff" / "c1"
    assert procs == [str(d / "cgroup.procs")]
    assert (v2root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (v2root / "skiff" / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "pids.max").read_text() == "100"
    assert cg.memory_limit("c1") == 64 << 20 and cg.pids_limit("c1") == 100
    assert cg.exists("c1") and cg.path("c1") == "/skiff/c1"
    assert cg.oom_file("c1") == str(d / "memory.events")


def test_v2_unlimited_is_max(v2root: Path) -> None:
    _seed_parent(v2root)
    cg = FixtureV2(v2root)
    cg.create("c1")
    d = v2root / "skiff" / "c1"
    assert (d / "memory.max").read_text() == "max" and (d / "pids.max").read_text() == "max"
    assert cg.memory_limit("c1") == 0 and cg.pids_limit("c1") == 0


def test_v2_swap_only_when_asked_and_present(v2root: Path) -> None:
    _seed_parent(v2root)
    cg = FixtureV2(v2root)
    d = v2root / "skiff" / "c1"
    cg.create("c1", memory_limit=100 << 20)
    assert not (d / "memory.swap.max").exists()
    (d / "memory.swap.max").write_text("max")
    cg.create("c1", memory_limit=100 << 20, memory_swap=300 << 20)
    assert (d / "memory.swap.max").read_text() == str(200 << 20)


def test_v2_does_not_enable_what_is_not_available(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    FixtureV2(tmp_path).create("c1")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"


def test_v2_pids_and_remove(v2root: Path) -> None:
    _seed_parent(v2root)
    cg = FixtureV2(v2root)
    cg.create("c1")
    (v2root / "skiff" / "c1" / "cgroup.procs").write_text("")
    assert cg.pids("c1") == []
    cg.remove("c1")
    assert not cg.exists("c1")
    cg.remove("c1")  # idempotent
    cg.remove_parent_if_empty()
    assert not (v2root / "skiff").exists()


def test_v2_remove_kills_and_gives_up_on_a_busy_group(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed_parent(v2root)
    cg = FixtureV2(v2root)
    cg.create("c1")
    d = v2root / "skiff" / "c1"
    (d / "cgroup.procs").write_text("424242\n")
    (d / "cgroup.kill").write_text("0")
    with pytest.raises(Internal, match="still busy"):
        cg.remove("c1", timeout=0.05)
    assert (d / "cgroup.kill").read_text() == "1"
    (d / "cgroup.procs").write_text("")
    cg.remove("c1")
    assert not d.exists()


def test_v1_create_per_controller(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("memory", "pids", "cpuset")}
    for m in mounts.values():
        m.mkdir()
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    # a new v1 cpuset group starts with empty cpus/mems
    for level in ("skiff", "skiff/c1"):
        (tmp_path / "cpuset" / level).mkdir()
        (tmp_path / "cpuset" / level / "cpuset.cpus").write_text("")
        (tmp_path / "cpuset" / level / "cpuset.mems").write_text("")
    cg = FixtureV1(mounts)
    procs = cg.create("c1", memory_limit=64 << 20, pids_limit=7)
    assert sorted(procs) == sorted(str(m / "skiff" / "c1" / "cgroup.procs") for m in mounts.values())
    assert (tmp_path / "memory/skiff/c1/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (tmp_path / "pids/skiff/c1/pids.max").read_text() == "7"
    assert (tmp_path / "cpuset/skiff/c1/cpuset.cpus").read_text() == "0-1"
    assert cg.memory_limit("c1") == 64 << 20 and cg.pids_limit("c1") == 7
    (tmp_path / "memory/skiff/c1/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cg.memory_limit("c1") == 0
    cg.remove("c1")
    cg.remove_parent_if_empty()
    assert [p for m in mounts.values() for p in m.iterdir() if p.is_dir()] == []


MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_mountinfo_detection() -> None:
    v2, v1 = parse_mountinfo(MOUNTINFO_V1)
    assert v2 is None  # an empty cgroup2 at .../unified does not make the host v2
    assert v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }
    assert CgroupV1(v1)._dirs("c") == [
        Path("/sys/fs/cgroup/cpu,cpuacct/skiff/c"),
        Path("/sys/fs/cgroup/memory/skiff/c"),
    ]
    v2, v1 = parse_mountinfo(MOUNTINFO_V2)
    assert v2 == Path("/sys/fs/cgroup") and v1 == {}
