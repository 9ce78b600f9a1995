"""Running-task operations beyond start/kill: pause, resume, update, top, stats.

Everything is read from the task's cgroup and from /proc on the host, so it
works for tasks started by an earlier execsvc. ``options_from_proto`` turns
a TaskSpec's resource and security fields into :class:`Options`.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc import spec as specmod
from skiff.execsvc.cgroups import Resources
from skiff.execsvc.options import Options
from skiff.execsvc.runtime import Runtime
from skiff.types.v1 import types_pb2

_CLK_TCK = os.sysconf("SC_CLK_TCK")
TOP_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def options_from_proto(ts: exec_pb2.TaskSpec) -> Options:
    return Options(
        resources=Resources(cpu_quota=ts.cpu_quota, cpu_period=ts.cpu_period, cpu_shares=ts.cpu_shares,
                            cpuset_cpus=ts.cpuset_cpus, memory_reservation=ts.memory_reservation,
                            blkio_weight=ts.blkio_weight),
        memory_swap=ts.memory_swap,
        capabilities=tuple(ts.capabilities) if ts.has_capabilities else None,
        privileged=ts.privileged,
        seccomp_profile=ts.seccomp_profile,
        allow_new_privileges=ts.allow_new_privileges,
        readonly_rootfs=ts.readonly_rootfs,
        tmpfs=tuple((m.target, ",".join(m.options)) for m in ts.tmpfs),
        shm_size=ts.shm_size,
        sysctls=tuple(sorted(ts.sysctls.items())),
    )


def rlimits_from_proto(ts: exec_pb2.TaskSpec) -> tuple[tuple[str, int, int], ...]:
    return tuple((f"RLIMIT_{u.name.upper()}", u.soft, u.hard) for u in ts.ulimits)


class Lifecycle:
    """Pause, resume, update, top and stats over a :class:`Runtime`."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.cgroups = runtime.cgroups

    def _running(self, cid: str) -> int:
        st = self.runtime.state(cid)
        if st.status != "running":
            raise errors.FailedPrecondition(f"Container {cid} is not running", reason=errors.CONTAINER_NOT_RUNNING)
        return st.pid

    def paused(self, cid: str) -> bool:
        return self.cgroups.exists(cid) and self.cgroups.frozen(cid)

    def pause(self, cid: str) -> None:
        self._running(cid)
        self.cgroups.freeze(cid, True)

    def resume(self, cid: str) -> None:
        self._running(cid)
        self.cgroups.freeze(cid, False)

    def update(self, cid: str, ts: exec_pb2.TaskSpec) -> None:
        """Merges the non-zero fields into config.json (kept for the next start) and the live cgroup."""
        b = self.runtime._existing(cid)
        cfg = self.runtime.config(cid)
        res: dict[str, Any] = cfg["linux"].setdefault("resources", {})
        mem = res.setdefault("memory", {})
        if ts.memory_bytes:
            if 0 < ts.memory_bytes < specmod.MIN_MEMORY:
                raise errors.InvalidArgument("Minimum memory limit allowed is 6MB")
            mem["limit"] = ts.memory_bytes
        if ts.memory_swap:
            mem["swap"] = ts.memory_swap
        if ts.memory_reservation:
            mem["reservation"] = ts.memory_reservation
        if ts.pids_limit:
            res.setdefault("pids", {})["limit"] = max(ts.pids_limit, 0)
        cpu = res.setdefault("cpu", {})
        for key, value in (("quota", ts.cpu_quota), ("period", ts.cpu_period), ("shares", ts.cpu_shares),
                           ("cpus", ts.cpuset_cpus)):
            if value:
                cpu[key] = value
        if ts.blkio_weight:
            res["blockIO"] = {"weight": ts.blkio_weight}
        if mem.get("limit") and mem.get("swap", 0) > 0 and mem["swap"] < mem["limit"]:
            raise errors.InvalidArgument(
                "Minimum memoryswap limit should be larger than memory limit, see usage")
        if self.cgroups.exists(cid):
            self.cgroups.create(cid, mem.get("limit", 0), res.get("pids", {}).get("limit", 0), mem.get("swap", 0))
            self.cgroups.set_resources(cid, Resources.from_oci(res))
        specmod.write_json_atomic(b / "config.json", cfg)

    # --- top -------------------------------------------------------------

    def top(self, cid: str) -> types_pb2.ProcessList:
        self._running(cid)
        now = time.time()
        boot = _boot_time()
        rows = []
        for pid in self.cgroups.pids(cid):
            row = _ps_row(pid, now, boot)
            if row is not None:
                rows.append(types_pb2.ProcessRow(fields=row))
        return types_pb2.ProcessList(titles=TOP_TITLES, processes=rows)

    # --- stats -----------------------------------------------------------

    def stats(self, cid: str) -> types_pb2.ContainerStats:
        st = self.runtime.state(cid)
        out = types_pb2.ContainerStats(id=cid, online_cpus=os.cpu_count() or 1)
        out.read.CopyFrom(_now())
        out.system_cpu_usage_ns = _system_cpu_ns()
        if st.status != "running" or not self.cgroups.exists(cid):
            return out
        u = self.cgroups.usage(cid)
        rx, tx = _net_io(st.pid)
        out.cpu_usage_ns, out.memory_usage = u.cpu_ns, u.memory
        out.memory_limit = u.memory_limit or _host_memory()
        out.net_rx_bytes, out.net_tx_bytes = rx, tx
        out.block_read_bytes, out.block_write_bytes, out.pids = u.block_read, u.block_write, u.pids
        return out


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _system_cpu_ns() -> int:
    """All CPU time of the host (the first line of /proc/stat), as Docker's system_cpu_usage."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    return sum(int(f) for f in fields) * 1_000_000_000 // _CLK_TCK


def _host_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _net_io(pid: int) -> tuple[int, int]:
    """Received and sent bytes of every interface but lo in the process's network namespace."""
    rx = tx = 0
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, data = line.partition(":")
        if name.strip() == "lo":
            continue
        cols = data.split()
        rx, tx = rx + int(cols[0]), tx + int(cols[8])
    return rx, tx


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cputime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _tty(tty_nr: int) -> str:
    if tty_nr == 0:
        return "?"
    major, minor = os.major(tty_nr), os.minor(tty_nr)
    if 136 <= major <= 143:
        return f"pts/{minor + (major - 136) * 256}"
    if major == 4:
        return f"tty{minor}"
    return "?"


def _ps_row(pid: int, now: float, boot: float) -> list[str] | None:
    """``ps -ef`` columns from /proc/<pid> (stat, status, cmdline); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    f = stat[stat.rindex(")") + 2 :].split()
    ppid, tty_nr = int(f[1]), int(f[4])
    cpu_ticks = int(f[11]) + int(f[12])
    start = boot + int(f[19]) / _CLK_TCK
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), 0)
    elapsed = max(now - start, 1e-9)
    c = int(cpu_ticks / _CLK_TCK / elapsed * 100)
    lt = time.localtime(start)
    stime = time.strftime("%H:%M", lt) if time.localtime(now)[:3] == lt[:3] else time.strftime("%b%d", lt)
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    cmd = " ".join(args) if args else f"[{comm}]"
    return [_user(uid), str(pid), str(ppid), str(c), stime, _tty(tty_nr), _cputime(cpu_ticks // _CLK_TCK), cmd]
