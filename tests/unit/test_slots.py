"""Warm slots' decisions and cgroup renames on fixture directories (no root, no real cgroupfs)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from skiff.common.errors import FailedPrecondition
from skiff.execsvc import slots
from skiff.execsvc.cgroups import CgroupV1, CgroupV2
from skiff.execsvc.nsmodes import NsModes
from skiff.execsvc.spec import ContainerSpec, RootfsMount, clone_flags

ROOTFS = RootfsMount("overlay", "overlay", ("lowerdir=/l", "upperdir=/u", "workdir=/w"))


def _flags(**kw: object) -> int:
    return clone_flags(ContainerSpec(id="c", args=("true",), rootfs=ROOTFS, **kw))  # type: ignore[arg-type]


def test_which_specs_fit_a_slot() -> None:
    assert slots.fits(_flags(network_mode="path", netns_path="/run/netns/x"))  # the API's --network none/bridge
    assert slots.fits(_flags(network_mode="none"))  # the child unshares its own netns at release
    assert slots.fits(_flags(network_mode="host"))
    assert not slots.fits(_flags(ns=NsModes(pid="host")))
    assert not slots.fits(_flags(ns=NsModes(uts="host")))
    assert not slots.fits(_flags(ns=NsModes(ipc="host")))
    assert not slots.fits(slots.STANDBY_FLAGS | 0x10000000)  # a user namespace: cold
    assert not slots.fits(0)


def test_cgroup_v2_has_no_slots(tmp_path: Path) -> None:
    """cgroup2 refuses rename(2) of a group (EPERM), so a slot could not become a container."""
    v2 = CgroupV2(tmp_path)
    assert slots.unsupported(v2) is not None
    with pytest.raises(FailedPrecondition):
        slots.SlotPool(v2, Path("/nonexistent/skiff-shim"))
    assert slots.unsupported(CgroupV1({"memory": tmp_path / "memory"})) is None


def test_configured_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKIFF_WARM_SLOTS", raising=False)
    assert slots.configured_size() == slots.DEFAULT_SIZE
    monkeypatch.setenv("SKIFF_WARM_SLOTS", "0")
    assert slots.configured_size() == 0
    monkeypatch.setenv("SKIFF_WARM_SLOTS", "-3")
    assert slots.configured_size() == 0
    monkeypatch.setenv("SKIFF_WARM_SLOTS", "many")
    assert slots.configured_size() == slots.DEFAULT_SIZE


def _v1(tmp_path: Path) -> CgroupV1:
    mounts = {c: tmp_path / c for c in ("memory", "pids", "cpu")}
    mounts["cpuacct"] = mounts["cpu"]  # co-mounted: one directory
    return CgroupV1(mounts, parent="skiff")


def _ready_slot(pool: slots.SlotPool, cg: CgroupV1, name: str) -> socket.socket:
    for d in cg._dirs(name):
        d.mkdir(parents=True)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pool._ready.append(slots.Slot(name=name, sock=ours, pid=0, shim_pid=0))
    return theirs


def test_take_renames_the_slot_in_every_hierarchy(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    pool = slots.SlotPool(cg, Path("/nonexistent"), size=1)
    monitor = _ready_slot(pool, cg, ".slot-1")
    assert pool.take(_flags(ns=NsModes(pid="host")), "c1") is None  # unfit: the slot stays
    assert pool.ready() == 1
    slot = pool.take(_flags(), "c1")
    assert slot is not None and slot.cid == "c1" and pool.taken == 1 and pool.ready() == 0
    assert sorted(p.parent.name + "/" + p.name for p in tmp_path.glob("*/skiff/*")) == [
        "skiff/c1", "skiff/c1", "skiff/c1"]  # memory, pids, cpu(+cpuacct)
    assert cg.exists("c1") and not any(tmp_path.glob("*/skiff/.slot-*"))
    slot.close()
    monitor.close()


def test_take_undoes_a_half_rename_and_goes_cold(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    pool = slots.SlotPool(cg, Path("/nonexistent"), size=1)
    monitor = _ready_slot(pool, cg, ".slot-1")
    (tmp_path / "pids" / "skiff" / "c1").mkdir()  # a group of that name exists in one hierarchy
    (tmp_path / "pids" / "skiff" / "c1" / "keep").write_text("")
    assert pool.take(_flags(), "c1") is None
    assert not (tmp_path / "memory" / "skiff" / "c1").exists()  # renamed back, never left half-done
    assert (tmp_path / "pids" / "skiff" / "c1" / "keep").exists()  # the existing group is untouched
    monitor.close()


def test_a_slot_whose_monitor_is_gone_is_dropped(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    pool = slots.SlotPool(cg, Path("/nonexistent"), size=2)
    _ready_slot(pool, cg, ".slot-1").close()  # EOF: the monitor exited
    monitor = _ready_slot(pool, cg, ".slot-2")
    slot = pool.take(_flags(), "c1")
    assert slot is not None and slot.name == ".slot-2"
    slot.close()
    monitor.close()


def test_limits_on_renamed_groups_make_no_directory(tmp_path: Path) -> None:
    """``create(made=True)``: a slot's renamed groups get the limits; nothing is made (v1 and v2)."""
    cg = _v1(tmp_path)
    for d in cg._dirs("c1"):
        d.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    procs = cg.create("c1", memory_limit=64 << 20, pids_limit=9, made=True)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == before
    assert procs == [str(d / "cgroup.procs") for d in cg._dirs("c1")]
    assert (tmp_path / "memory" / "skiff" / "c1" / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (tmp_path / "pids" / "skiff" / "c1" / "pids.max").read_text() == "9"
    v2 = CgroupV2(tmp_path / "v2")
    (tmp_path / "v2" / "skiff" / "c1").mkdir(parents=True)
    assert v2.create("c1", memory_limit=32 << 20, made=True) == [str(tmp_path / "v2" / "skiff" / "c1" / "cgroup.procs")]
    assert (tmp_path / "v2" / "skiff" / "c1" / "memory.max").read_text() == str(32 << 20)
    assert not (tmp_path / "v2" / "cgroup.subtree_control").exists()  # no controller enabling either
