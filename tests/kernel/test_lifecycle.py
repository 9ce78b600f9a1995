"""Lifecycle, limits and security options on a real kernel, asserted from inside busybox
containers and on the host's cgroup files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.common.errors import InvalidArgument
from skiff.exec.v1 import exec_pb2
from skiff.execsvc import logs
from skiff.execsvc.cgroups import CgroupV1, Resources
from skiff.execsvc.lifecycle import Lifecycle
from skiff.execsvc.options import Options
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, RootfsMount

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]


def run(rt: Runtime, make_rootfs: MakeRootfs, script: str, cid: str = "lc", **kw: object) -> tuple[int, str, str]:
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id=cid, args=("sh", "-c", script), rootfs=rootfs, **kw))  # type: ignore[arg-type]
    rt.start(cid)
    code = rt.wait(cid, timeout=20)
    entries = list(logs.read(rt.log_path(cid)))
    out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
    err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
    rt.delete(cid)
    return code, out, err


def status(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def _v1(rt: Runtime) -> CgroupV1:
    if not isinstance(rt.cgroups, CgroupV1):
        pytest.skip("asserts cgroup v1 files (v2 is covered on fixtures)")
    return rt.cgroups


def _ctrl(rt: Runtime, controller: str, cid: str) -> Path:
    cg = _v1(rt)
    return cg.mounts[controller] / cg.parent / cid


def _start(rt: Runtime, make_rootfs: MakeRootfs, script: str, cid: str, **kw: object) -> None:
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id=cid, args=("sh", "-c", script), rootfs=rootfs, **kw))  # type: ignore[arg-type]
    rt.start(cid)


def test_cpus_memory_reservation_and_shares_reach_the_cgroup(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    res = Resources(cpu_quota=50000, cpu_period=100000, cpu_shares=512, cpuset_cpus="0",
                    memory_reservation=32 << 20)
    _start(runtime, make_rootfs, "sleep 30", "cpu", options=Options(resources=res))
    try:
        cpu = _ctrl(runtime, "cpu", "cpu")
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (cpu / "cpu.shares").read_text().strip() == "512"
        assert (_ctrl(runtime, "cpuset", "cpu") / "cpuset.cpus").read_text().strip() == "0"
        soft = _ctrl(runtime, "memory", "cpu") / "memory.soft_limit_in_bytes"
        assert soft.read_text().strip() == str(32 << 20)
    finally:
        runtime.delete("cpu", force=True)


def test_pause_stops_a_counter_and_unpause_resumes_it(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, upper = make_rootfs()
    loop = "i=0; while true; do i=$((i+1)); echo $i >> /n; sleep 0.01; done"
    runtime.create(ContainerSpec(id="pz", args=("sh", "-c", loop), rootfs=rootfs))
    runtime.start("pz")
    lc = Lifecycle(runtime)
    try:
        time.sleep(0.3)
        lc.pause("pz")
        assert lc.paused("pz")
        a = (upper / "n").stat().st_size
        time.sleep(0.4)
        assert (upper / "n").stat().st_size == a, "the counter advanced while paused"
        lc.resume("pz")
        assert not lc.paused("pz")
        time.sleep(0.4)
        assert (upper / "n").stat().st_size > a
        lc.pause("pz")  # a paused container can still be killed and removed
    finally:
        runtime.delete("pz", force=True)


def test_top_stats_and_update(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="tp", args=("sleep", "30"), rootfs=rootfs, memory_limit=64 << 20))
    runtime.start("tp")
    lc = Lifecycle(runtime)
    try:
        top = lc.top("tp")
        assert list(top.titles) == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert [r.fields[7] for r in top.processes] == ["sleep 30"]
        assert top.processes[0].fields[0] == "root"
        s = lc.stats("tp")
        assert s.memory_limit == 64 << 20 and s.pids == 1 and s.memory_usage > 0 and s.system_cpu_usage_ns > 0
        lc.update("tp", exec_pb2.TaskSpec(memory_bytes=128 << 20, pids_limit=50, cpu_quota=20000, cpu_period=100000))
        assert runtime.cgroups.memory_limit("tp") == 128 << 20
        assert runtime.cgroups.pids_limit("tp") == 50
        if isinstance(runtime.cgroups, CgroupV1):
            assert (_ctrl(runtime, "cpu", "tp") / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert runtime.config("tp")["linux"]["resources"]["memory"]["limit"] == 128 << 20
    finally:
        runtime.delete("tp", force=True)


def test_cap_drop_all_and_cap_add(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "grep ^Cap /proc/self/status", options=Options(capabilities=()))
    assert code == 0, err
    assert status(out)["CapEff"] == "0" * 16
    code, out, err = run(runtime, make_rootfs, "grep ^CapEff /proc/self/status",
                         options=Options(capabilities=("CAP_CHOWN", "CAP_SYS_ADMIN")))
    assert code == 0, err
    assert int(status(out)["CapEff"], 16) == (1 << 0) | (1 << 21)


def test_privileged_has_every_capability_and_no_seccomp(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = ("grep -E '^(CapEff|Seccomp)' /proc/self/status; ls /dev | grep -c .; "
              "mkdir -p /mnt; mount -t tmpfs x /mnt; echo m=$?")
    code, out, err = run(runtime, make_rootfs, script, options=Options(privileged=True))
    assert code == 0, err
    st = status(out)
    own = status(Path("/proc/self/status").read_text())["CapBnd"]
    assert st["CapEff"] == own  # every capability execsvc has
    assert st["Seccomp"] == "0"
    assert "m=0" in out


def test_seccomp_unconfined_a_profile_and_new_privileges(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    _, out, _ = run(runtime, make_rootfs, "grep -E '^(Seccomp|NoNewPrivs)' /proc/self/status",
                       options=Options(seccomp_profile="unconfined", allow_new_privileges=True))
    st = status(out)
    assert (st["Seccomp"], st["NoNewPrivs"]) == ("0", "0"), out
    profile = ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
               '[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}')
    _, out, _ = run(runtime, make_rootfs, "mkdir /x; echo rc=$?; grep ^Seccomp /proc/self/status",
                       options=Options(seccomp_profile=profile, allow_new_privileges=True))
    assert "rc=1" in out and "Seccomp:\t2" in out, out


def test_read_only_root_with_tmpfs_and_shm_size(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = """
        touch /x 2>/dev/null && echo root-writable
        touch /tmp/y && echo tmp-ok
        grep ' /tmp ' /proc/mounts
        df -k /dev/shm | tail -1
    """
    code, out, err = run(runtime, make_rootfs, script,
                         options=Options(readonly_rootfs=True, tmpfs=(("/tmp", "size=1m"),), shm_size=8 << 20))
    assert code == 0, err
    assert "root-writable" not in out and "tmp-ok" in out, out
    assert "tmpfs /tmp tmpfs rw,nosuid,nodev,noexec" in out, out
    assert " 8192 " in out, out


def test_ulimit_and_sysctls(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "ulimit -n; ulimit -Hn; cat /proc/sys/net/ipv4/ip_forward",
                         rlimits=(("RLIMIT_NOFILE", 100, 200),),
                         options=Options(sysctls=(("net.ipv4.ip_forward", "1"),)))
    assert code == 0, err
    assert out.split() == ["100", "200", "1"]


def test_bad_ulimit_and_sysctl_are_rejected(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    with pytest.raises(InvalidArgument, match="above the host's hard limit"):
        ContainerSpec(id="x", args=("true",), rootfs=rootfs, rlimits=(("RLIMIT_NOFILE", 10, 1 << 40),)).validate()
    with pytest.raises(InvalidArgument, match=r"kernel\.panic"):
        ContainerSpec(id="x", args=("true",), rootfs=rootfs,
                      options=Options(sysctls=(("kernel.panic", "1"),))).validate()
