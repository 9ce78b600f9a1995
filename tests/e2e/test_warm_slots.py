"""Warm slots through the CLI: a container started from a slot is in its own cgroup with its
limits, top/stats/update/exec/restart see it as any other, an execsvc SIGKILL leaves no slot."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from skiff.execsvc import slots
from skiff.execsvc.cgroups import detect
from tests.e2e.conftest import Engine

CGROUP_PARENT = f"skiff-e2e-{os.getpid()}"  # the engine fixture's
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@pytest.fixture(autouse=True)
def _v1_only() -> None:
    if slots.unsupported(detect(CGROUP_PARENT)) is not None:
        pytest.skip("warm slots need cgroup v1")


def _memory(*parts: str) -> Path:
    return Path("/sys/fs/cgroup/memory", CGROUP_PARENT, *parts)


def _slot_names() -> list[str]:
    return sorted(p.name for p in _memory().iterdir() if p.name.startswith(slots.PREFIX)) if _memory().exists() else []


def _wait_slots(n: int, prefix: str = slots.PREFIX) -> list[str]:
    deadline = time.monotonic() + 20
    while len([s for s in _slot_names() if s.startswith(prefix)]) < n:
        assert time.monotonic() < deadline, f"not {n} warm slots {prefix}*: {_slot_names()}"
        time.sleep(0.05)
    return _slot_names()


def _stat(pid: int) -> list[str]:
    data = Path(f"/proc/{pid}/stat").read_text()
    return data[data.rindex(")") + 2:].split()


def _uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * _CLK_TCK


def _wait_log(skiff, name: str, text: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        out = skiff("logs", name)
        if text in out.stdout + out.stderr:
            return out.stdout + out.stderr
        assert time.monotonic() < deadline, out
        time.sleep(0.1)


def test_a_container_from_a_warm_slot_is_like_any_other(engine: Engine, skiff) -> None:
    _wait_slots(2)
    before = _uptime_ticks()
    script = ("cat /proc/1/cgroup; (for i in 1 2 3 4 5 6 7 8 9; do sleep 60 & done); echo forked; "
              "exec sleep 60")
    cid = skiff("run", "-d", "--name", "ws1", "--memory", "64m", "--pids-limit", "6", "busybox", "sh", "-c",
                script, check=True).stdout.strip()
    try:
        pid = int(skiff("inspect", "-f", "{{.State.Pid}}", "ws1", check=True).stdout)
        # Its PID 1 was cloned before the run began: it stood by in a slot.
        assert int(_stat(pid)[19]) < before
        log = _wait_log(skiff, "ws1", "forked")
        assert f"memory:/{CGROUP_PARENT}/{cid}\n" in log and f"pids:/{CGROUP_PARENT}/{cid}\n" in log, log
        assert "can't fork" in log  # the pids limit holds
        procs = [int(p) for p in _memory(cid, "cgroup.procs").read_text().split()]
        monitor = int(_stat(pid)[1])  # the init's parent
        assert pid in procs and monitor not in procs and len(procs) <= 6, (procs, monitor)
        assert _memory(cid, "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        top = skiff("top", "ws1", check=True).stdout
        assert "sleep 60" in top and "skiff-shim" not in top, top
        stats = skiff("stats", "--no-stream", "ws1", check=True).stdout
        assert "64MiB" in stats, stats
        skiff("update", "--pids-limit", "20", "ws1", check=True)
        assert Path("/sys/fs/cgroup/pids", CGROUP_PARENT, cid, "pids.max").read_text().strip() == "20"
        own = skiff("exec", "ws1", "cat", "/proc/self/cgroup", check=True).stdout
        assert f"memory:/{CGROUP_PARENT}/{cid}\n" in own, own
        skiff("restart", "-t", "1", "ws1", check=True)
        new_pid = int(skiff("inspect", "-f", "{{.State.Pid}}", "ws1", check=True).stdout)
        assert new_pid != pid and pid not in [int(p) for p in _memory(cid, "cgroup.procs").read_text().split()]
        assert new_pid in [int(p) for p in _memory(cid, "cgroup.procs").read_text().split()]
    finally:
        skiff("rm", "-f", "ws1")
    assert not _memory(cid).exists()


def test_execsvc_sigkill_leaves_no_warm_slot_behind(engine: Engine, skiff) -> None:
    old = engine.service_pid("execsvc")
    _wait_slots(2, f"{slots.PREFIX}{old}-")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        try:
            new = engine.service_pid("execsvc")
        except AssertionError:
            new = old
        if new != old:
            break
        assert time.monotonic() < deadline, "execsvc did not come back"
        time.sleep(0.05)
    names = _wait_slots(2, f"{slots.PREFIX}{new}-")
    assert all(n.startswith(f"{slots.PREFIX}{new}-") for n in names), names  # the old ones are gone
    deadline = time.monotonic() + 10
    while _standby_shims(f"{slots.PREFIX}{old}-"):
        assert time.monotonic() < deadline, "the killed execsvc's standby shims are still there"
        time.sleep(0.05)
    assert skiff("run", "--rm", "busybox", "echo", "ok", check=True).stdout == "ok\n"


def _standby_shims(marker: str) -> list[int]:
    """Live processes whose command line names ``marker`` (a slot's groups): standby shims."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            state = _stat(int(p.name))[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmd and state != "Z":
            out.append(int(p.name))
    return out
