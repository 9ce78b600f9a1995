"""Warm slots (execsvc/slots.py) on a real kernel: a start from a slot gives the container what a
cold start gives it, the pool refills, a dead execsvc's slots are cleaned, unfit specs go cold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.common import reaper
from skiff.execsvc import logs, slots
from skiff.execsvc.cgroups import CgroupV1, detect
from skiff.execsvc.nsmodes import NsModes
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, RootfsMount

from .conftest import CGROUP_PARENT, _cgroup_dirs, _children

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]


def _slot_names(cg: CgroupV1) -> list[str]:
    mem = cg.mounts["memory"] / cg.parent
    return sorted(p.name for p in mem.iterdir() if p.name.startswith(slots.PREFIX)) if mem.exists() else []


@pytest.fixture(params=["c-init", "python-init"])
def pooled(request: pytest.FixtureRequest, shim: Path, tmp_path: Path) -> Iterator[tuple[Runtime, slots.SlotPool]]:
    before = set(_children())
    cg = detect(CGROUP_PARENT)
    if slots.unsupported(cg) is not None:
        pytest.skip(f"warm slots: {slots.unsupported(cg)}")
    rt = Runtime(tmp_path / "exec", shim, cgroups=cg)
    rt.force_python_init = request.param == "python-init"
    pool = slots.SlotPool(cg, shim, size=2)
    pool.start()
    rt.slots = pool
    assert pool.wait_ready(2, 20), "no warm slots made"
    yield rt, pool
    for cid in rt.list():
        rt.delete(cid, force=True)
    pool.close()
    assert _slot_names(cg) == [], "slot groups left behind"  # type: ignore[arg-type]
    cg.remove_parent_if_empty()
    deadline = time.monotonic() + 5
    while set(_children()) - before and time.monotonic() < deadline:
        reaper.reap()
        time.sleep(0.02)
    assert sorted(set(_children()) - before) == [], "processes left behind"
    assert _cgroup_dirs(cg) == [], "cgroup directories left behind"  # type: ignore[arg-type]


def _output(rt: Runtime, cid: str) -> tuple[str, str]:
    entries = list(logs.read(rt.log_path(cid)))
    return (b"".join(e.data for e in entries if e.stream == "stdout").decode(),
            b"".join(e.data for e in entries if e.stream == "stderr").decode())


def _shim_pid(rt: Runtime, cid: str) -> int:
    return int((rt.bundle(cid) / "shim.pid").read_text())


def test_a_slot_start_is_the_containers_own_cgroup_with_its_limits(
        pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    cg = rt.cgroups
    assert isinstance(cg, CgroupV1)
    names = _slot_names(cg)
    rootfs, _ = make_rootfs()
    # A subshell starts eight sleeps under a pids limit of 5: a fork fails, the subshell gives up.
    script = "cat /proc/1/cgroup; (for i in 1 2 3 4 5 6 7 8; do sleep 30 & done); echo forked; exec sleep 30"
    rt.create(ContainerSpec(id="ws1", args=("sh", "-c", script), rootfs=rootfs, memory_limit=64 << 20, pids_limit=5))
    assert pool.taken == 1
    assert len(set(names) - set(_slot_names(cg))) == 1, "the slot's groups are the container's now"
    pid = rt.start("ws1", created=True)
    deadline = time.monotonic() + 20
    while "forked" not in _output(rt, "ws1")[0]:
        assert time.monotonic() < deadline, _output(rt, "ws1")
        time.sleep(0.05)
    out, err = _output(rt, "ws1")
    lines = dict(line.split(":", 2)[1:] for line in out.splitlines() if line.count(":") >= 2)
    for controller in ("memory", "pids", "cpu", "devices", "freezer"):
        assert lines.get(controller) == f"/{CGROUP_PARENT}/ws1", out  # as seen by PID 1 itself
    assert "can't fork" in err or "Resource temporarily unavailable" in err, err
    procs = cg.pids("ws1")
    assert pid in procs and len(procs) <= 5, procs  # the limit holds
    assert _shim_pid(rt, "ws1") not in procs, "the monitor must not be in the container's cgroup"
    assert cg.memory_limit("ws1") == 64 << 20 and cg.pids_limit("ws1") == 5
    rt.kill("ws1", signal.SIGKILL)
    assert rt.wait("ws1", timeout=20) == 137


def test_a_memory_limit_holds_in_a_slot_container(
        pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    rootfs, _ = make_rootfs()
    script = "x=$(head -c 30000000 /dev/zero | tr '\\0' a); echo survived"
    rt.create(ContainerSpec(id="ws2", args=("sh", "-c", script), rootfs=rootfs, memory_limit=8 << 20))
    assert pool.taken == 1
    rt.start("ws2", created=True)
    rt.wait("ws2", timeout=30)
    assert "survived" not in _output(rt, "ws2")[0]
    assert rt.state("ws2").oom_killed


def test_the_pool_refills_after_each_start(pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    for i in range(3):
        assert pool.wait_ready(2, 20), f"the pool did not refill (round {i})"
        rootfs, _ = make_rootfs()
        rt.create(ContainerSpec(id=f"r{i}", args=("sh", "-c", "echo $$"), rootfs=rootfs))
        rt.start(f"r{i}", created=True)
        assert rt.wait(f"r{i}", timeout=20) == 0 and _output(rt, f"r{i}")[0] == "1\n"
        assert pool.taken == i + 1
    assert pool.wait_ready(2, 20)
    assert pool.made == 5


def test_errors_are_reported_as_from_a_cold_start(
        pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    from skiff.common import errors

    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id="nf", args=("no-such-command",), rootfs=rootfs))
    assert pool.taken == 1
    with pytest.raises(errors.FailedPrecondition) as exc:
        rt.start("nf", created=True)
    assert exc.value.reason == errors.COMMAND_NOT_FOUND
    assert "no-such-command" in str(exc.value)
    assert rt.state("nf").status == "created" and rt.state("nf").error


def test_an_unfit_spec_takes_the_cold_path(pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    names = _slot_names(rt.cgroups)  # type: ignore[arg-type]
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id="uh", args=("hostname",), rootfs=rootfs, ns=NsModes(uts="host")))
    assert pool.taken == 0 and _slot_names(rt.cgroups) == names  # type: ignore[arg-type]
    rt.start("uh", created=True)
    assert rt.wait("uh", timeout=20) == 0
    assert _output(rt, "uh")[0] == os.uname().nodename + "\n"


def test_a_slot_whose_process_died_is_skipped(
        pooled: tuple[Runtime, slots.SlotPool], make_rootfs: MakeRootfs) -> None:
    rt, pool = pooled
    cg = rt.cgroups
    assert isinstance(cg, CgroupV1)
    for name in _slot_names(cg):  # both standby children die: their monitors exit
        for pid in (cg.mounts["pids"] / cg.parent / name / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not all(not s.alive() for s in pool._ready):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id="dead", args=("true",), rootfs=rootfs))
    assert pool.taken == 0  # cold
    rt.start("dead", created=True)
    assert rt.wait("dead", timeout=20) == 0


def test_a_killed_execsvcs_slots_are_removed_by_the_next(shim: Path, tmp_path: Path) -> None:
    """An execsvc SIGKILLed with ready slots: its standby shims exit by themselves (EOF) and
    kill their children; the next pool's start-up removes the groups."""
    cg = detect(CGROUP_PARENT)
    if slots.unsupported(cg) is not None:
        pytest.skip(f"warm slots: {slots.unsupported(cg)}")
    assert isinstance(cg, CgroupV1)
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from skiff.execsvc import slots
        from skiff.execsvc.cgroups import detect
        pool = slots.SlotPool(detect({CGROUP_PARENT!r}), Path({str(shim)!r}), size=2)
        pool.start()
        assert pool.wait_ready(2, 20)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        names = _slot_names(cg)
        assert len(names) == 2
        held = [int(p) for n in names
                for p in (cg.mounts["memory"] / cg.parent / n / "cgroup.procs").read_text().split()]
        assert len(held) == 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in held):
        assert time.monotonic() < deadline, "standby children outlived their execsvc"
        reaper.reap()
        time.sleep(0.02)
    assert _slot_names(cg) == names  # still there: nobody removed them yet
    pool = slots.SlotPool(cg, shim, size=0)
    pool.start()
    try:
        assert _slot_names(cg) == []
    finally:
        pool.close()
        cg.remove_parent_if_empty()
    deadline = time.monotonic() + 5
    while _standby_shims() and time.monotonic() < deadline:
        reaper.reap()
        time.sleep(0.02)
    assert _standby_shims() == [], "standby shims left behind"


def _state(pid: int) -> str:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return data[data.rindex(")") + 2]


def _standby_shims() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"standby" in cmd and CGROUP_PARENT.encode() in cmd and _state(int(p.name)) != "Z":
                out.append(int(p.name))
    return out
