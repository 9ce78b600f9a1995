"""Container cgroups: one interface, a cgroup v1 and a cgroup v2 back-end.

Every container gets ``<parent>/<id>`` (``skiff/<id>`` by default) in each
hierarchy. execsvc only creates, limits, inspects and removes the groups; the
container's init joins them itself by writing ``0`` to the ``cgroup.procs``
files that :meth:`Cgroups.create` returns, so the container is in its cgroup
before it runs any user code.

The root paths are constructor arguments so the logic can be tested on
fixture directories without root (see ``tests/unit/test_cgroups.py``).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skiff.common.errors import Internal

#: v1 controllers a container joins when they are mounted. cpuset needs its
#: cpus/mems copied from the parent before a task may join.
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices")
#: v1 reports "no limit" as a page-rounded LLONG_MAX.
_V1_UNLIMITED = 1 << 62


class Cgroups(Protocol):
    """What the runtime needs from a cgroup back-end."""

    version: int
    #: the group all containers live under, e.g. "skiff"
    parent: str

    def create(self, cid: str, memory_limit: int = 0, pids_limit: int = 0, memory_swap: int = 0,
               made: bool = False) -> list[str]:
        """Creates (or reuses) the container's groups with the limits; returns the cgroup.procs paths.
        ``made``: the groups exist (a warm slot's, renamed): only the limits are written."""
        ...

    def exists(self, cid: str) -> bool: ...

    def memory_limit(self, cid: str) -> int:
        """The memory limit in bytes, 0 when unlimited."""
        ...

    def pids_limit(self, cid: str) -> int: ...

    def pids(self, cid: str) -> list[int]: ...

    def oom_file(self, cid: str) -> str | None:
        """The file with an ``oom_kill N`` line that the shim reads after the exit."""
        ...

    def path(self, cid: str) -> str:
        """The cgroupsPath for config.json."""
        ...

    def remove(self, cid: str, timeout: float = 5.0) -> None: ...

    def remove_parent_if_empty(self) -> None: ...

    def set_resources(self, cid: str, res: Resources) -> None:
        """CPU quota/shares/cpuset, memory reservation, block I/O weight (0/empty: leave as is)."""
        ...

    def freeze(self, cid: str, frozen: bool, timeout: float = 5.0) -> None:
        """Freezes or thaws every process of the group; returns once the kernel reports it."""
        ...

    def frozen(self, cid: str) -> bool: ...

    def usage(self, cid: str) -> Usage: ...


@dataclass(frozen=True)
class Resources:
    """The limits beyond memory and pids, in the OCI ``linux.resources`` units."""

    cpu_quota: int = 0  # microseconds per period; 0 leaves it, -1 unlimited
    cpu_period: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    memory_reservation: int = 0
    blkio_weight: int = 0

    @classmethod
    def from_oci(cls, res: dict[str, Any]) -> Resources:
        cpu, mem, bio = res.get("cpu", {}), res.get("memory", {}), res.get("blockIO", {})
        return cls(cpu_quota=cpu.get("quota", 0), cpu_period=cpu.get("period", 0), cpu_shares=cpu.get("shares", 0),
                   cpuset_cpus=cpu.get("cpus", ""), memory_reservation=mem.get("reservation", 0),
                   blkio_weight=bio.get("weight", 0))


@dataclass(frozen=True)
class Usage:
    """One sample of a group's counters."""

    cpu_ns: int = 0
    memory: int = 0
    memory_limit: int = 0
    block_read: int = 0
    block_write: int = 0
    pids: int = 0


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """v1 blkio.weight (10..1000) to v2 io.weight (1..10000), as runc converts."""
    return 1 + ((weight - 10) * 9999) // 990


def _read_int(path: Path, default: int = 0) -> int:
    try:
        v = path.read_text().strip()
    except OSError:
        return default
    return default if v in ("", "max") else int(v)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise Internal(f"{what} did not happen within {timeout}s")
        time.sleep(0.01)


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise Internal(f"write {value!r} to {path}: {e.strerror}") from e


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except FileNotFoundError:
        return []


def _rmdir(path: Path) -> bool:
    """True when gone; False while busy (tasks still exiting)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise Internal(f"rmdir {path}: {e.strerror}") from e
    return True


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class CgroupV2:
    """The unified hierarchy: one directory per container, controllers enabled top-down."""

    version = 2

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), parent: str = "skiff"):
        self.root = Path(root)
        self.parent = parent

    def _dir(self, cid: str) -> Path:
        return self.root / self.parent / cid

    def _enable(self, group: Path, wanted: tuple[str, ...]) -> None:
        """A child can only use a controller its parent lists in cgroup.subtree_control."""
        available = (
            (group / "cgroup.controllers").read_text().split()
            if (group / "cgroup.controllers").exists()
            else []
        )
        enabled = (
            (group / "cgroup.subtree_control").read_text().split()
            if (group / "cgroup.subtree_control").exists()
            else []
        )
        missing = [c for c in wanted if c in available and c not in enabled]
        if missing:
            _write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def create(self, cid: str, memory_limit: int = 0, pids_limit: int = 0, memory_swap: int = 0,
               made: bool = False) -> list[str]:
        wanted = ("memory", "pids")
        parent = self.root / self.parent
        d = self._dir(cid)
        if not made:
            self._enable(self.root, wanted)
            parent.mkdir(exist_ok=True)
            self._enable(parent, wanted)
            d.mkdir(exist_ok=True)
        _write(d / "memory.max", str(memory_limit) if memory_limit else "max")
        if memory_swap and (d / "memory.swap.max").exists():
            # v2 counts swap separately; Docker's --memory-swap is memory + swap.
            _write(
                d / "memory.swap.max", "max" if memory_swap < 0 else str(max(memory_swap - memory_limit, 0))
            )
        _write(d / "pids.max", str(pids_limit) if pids_limit else "max")
        return [str(d / "cgroup.procs")]

    def exists(self, cid: str) -> bool:
        return self._dir(cid).is_dir()

    def _read_limit(self, f: Path) -> int:
        v = f.read_text().strip()
        return 0 if v == "max" else int(v)

    def memory_limit(self, cid: str) -> int:
        return self._read_limit(self._dir(cid) / "memory.max")

    def pids_limit(self, cid: str) -> int:
        return self._read_limit(self._dir(cid) / "pids.max")

    def pids(self, cid: str) -> list[int]:
        return _read_pids(self._dir(cid) / "cgroup.procs")

    def oom_file(self, cid: str) -> str | None:
        return str(self._dir(cid) / "memory.events")

    def path(self, cid: str) -> str:
        return f"/{self.parent}/{cid}"

    def _rmdir(self, path: Path) -> bool:
        return _rmdir(path)

    def remove(self, cid: str, timeout: float = 5.0) -> None:
        d = self._dir(cid)
        deadline = time.monotonic() + timeout
        while d.exists():
            if self._rmdir(d):
                return
            kill = d / "cgroup.kill"  # kernel >= 5.14 kills the whole subtree at once
            if kill.exists():
                _write(kill, "1")
            else:
                _kill_all(self.pids(cid))
            if time.monotonic() > deadline:
                raise Internal(f"cgroup {d} still busy after {timeout}s")
            time.sleep(0.02)

    def remove_parent_if_empty(self) -> None:
        self._rmdir(self.root / self.parent)

    def set_resources(self, cid: str, res: Resources) -> None:
        d = self._dir(cid)
        need = tuple(c for c, on in (("cpu", res.cpu_quota or res.cpu_period or res.cpu_shares),
                                     ("cpuset", res.cpuset_cpus), ("io", res.blkio_weight)) if on)
        if need:  # only when asked for: every enabled controller costs on each group
            self._enable(self.root, need)
            self._enable(self.root / self.parent, need)
        if res.cpu_quota or res.cpu_period:
            quota = "max" if res.cpu_quota <= 0 else str(res.cpu_quota)
            _write(d / "cpu.max", f"{quota} {res.cpu_period or 100000}")
        if res.cpu_shares:
            _write(d / "cpu.weight", str(shares_to_weight(res.cpu_shares)))
        if res.cpuset_cpus:
            _write(d / "cpuset.cpus", res.cpuset_cpus)
        if res.memory_reservation:
            _write(d / "memory.low", str(res.memory_reservation))
        if res.blkio_weight:
            if (d / "io.bfq.weight").exists():
                _write(d / "io.bfq.weight", str(res.blkio_weight))
            else:
                _write(d / "io.weight", f"default {blkio_to_io_weight(res.blkio_weight)}")

    def freeze(self, cid: str, frozen: bool, timeout: float = 5.0) -> None:
        _write(self._dir(cid) / "cgroup.freeze", "1" if frozen else "0")
        _wait_for(lambda: self.frozen(cid) == frozen, timeout, f"{'freeze' if frozen else 'thaw'} of {cid}")

    def frozen(self, cid: str) -> bool:
        try:
            events = (self._dir(cid) / "cgroup.events").read_text().split("\n")
        except OSError:
            return False
        return "frozen 1" in events

    def usage(self, cid: str) -> Usage:
        d = self._dir(cid)
        cpu = 0
        stat = d / "cpu.stat"
        if stat.exists():
            for line in stat.read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    cpu = int(v) * 1000
        mem = _read_int(d / "memory.current")
        try:
            for line in (d / "memory.stat").read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "inactive_file":  # as Docker's CLI: page cache that can go is not usage
                    mem = max(mem - int(v), 0)
        except OSError:
            pass
        rd = wr = 0
        try:
            for line in (d / "io.stat").read_text().splitlines():
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    rd += int(v) if k == "rbytes" else 0
                    wr += int(v) if k == "wbytes" else 0
        except OSError:
            pass
        return Usage(cpu_ns=cpu, memory=mem, memory_limit=_read_int(d / "memory.max"),
                     block_read=rd, block_write=wr, pids=_read_int(d / "pids.current"))


class CgroupV1:
    """One directory per controller hierarchy (``<mount>/<parent>/<id>``)."""

    version = 1

    def __init__(self, mounts: dict[str, Path], parent: str = "skiff"):
        #: controller -> mount point; co-mounted controllers share a path.
        self.mounts = {c: Path(p) for c, p in mounts.items()}
        self.parent = parent

    def _dirs(self, cid: str) -> list[Path]:
        seen: list[Path] = []
        for p in self.mounts.values():
            if p not in seen:
                seen.append(p)
        return [p / self.parent / cid for p in seen]

    def _ctrl(self, controller: str, cid: str) -> Path | None:
        m = self.mounts.get(controller)
        return m / self.parent / cid if m else None

    @staticmethod
    def _copy_cpuset(d: Path) -> None:
        """A fresh v1 cpuset group has empty cpus/mems, and no task may join until they are set."""
        for name in ("cpuset.cpus", "cpuset.mems"):
            f = d / name
            if f.exists() and not f.read_text().strip():
                _write(f, (d.parent / name).read_text().strip())

    def create(self, cid: str, memory_limit: int = 0, pids_limit: int = 0, memory_swap: int = 0,
               made: bool = False) -> list[str]:
        for d in [] if made else self._dirs(cid):
            for level in (d.parent, d):
                level.mkdir(exist_ok=True)
                if (level / "cpuset.cpus").exists():
                    self._copy_cpuset(level)
        mem = self._ctrl("memory", cid)
        if mem:
            limit = str(memory_limit) if memory_limit else "-1"
            memsw = mem / "memory.memsw.limit_in_bytes"
            if memory_swap and memsw.exists():
                # memsw must stay >= limit: raise/lower in the order the kernel accepts.
                sw = "-1" if memory_swap < 0 else str(memory_swap)
                _write(memsw, sw)
                _write(mem / "memory.limit_in_bytes", limit)
                _write(memsw, sw)
            else:
                _write(mem / "memory.limit_in_bytes", limit)
        pids = self._ctrl("pids", cid)
        if pids:
            _write(pids / "pids.max", str(pids_limit) if pids_limit else "max")
        return [str(d / "cgroup.procs") for d in self._dirs(cid)]

    def exists(self, cid: str) -> bool:
        return any(d.is_dir() for d in self._dirs(cid))

    def memory_limit(self, cid: str) -> int:
        mem = self._ctrl("memory", cid)
        if not mem:
            return 0
        v = int((mem / "memory.limit_in_bytes").read_text())
        return 0 if v >= _V1_UNLIMITED else v

    def pids_limit(self, cid: str) -> int:
        p = self._ctrl("pids", cid)
        if not p:
            return 0
        v = (p / "pids.max").read_text().strip()
        return 0 if v == "max" else int(v)

    def pids(self, cid: str) -> list[int]:
        found: set[int] = set()
        for d in self._dirs(cid):
            found.update(_read_pids(d / "cgroup.procs"))
        return sorted(found)

    def oom_file(self, cid: str) -> str | None:
        mem = self._ctrl("memory", cid)
        return str(mem / "memory.oom_control") if mem else None

    def path(self, cid: str) -> str:
        return f"/{self.parent}/{cid}"

    def _rmdir(self, path: Path) -> bool:
        return _rmdir(path)

    def remove(self, cid: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = [d for d in self._dirs(cid) if d.exists() and not self._rmdir(d)]
            if not left:
                return
            _kill_all(self.pids(cid))
            if time.monotonic() > deadline:
                raise Internal(f"cgroups {', '.join(map(str, left))} still busy after {timeout}s")
            time.sleep(0.02)

    def remove_parent_if_empty(self) -> None:
        for d in self._dirs("x"):
            self._rmdir(d.parent)

    def set_resources(self, cid: str, res: Resources) -> None:
        cpu = self._ctrl("cpu", cid)
        if cpu:
            if res.cpu_period:
                _write(cpu / "cpu.cfs_period_us", str(res.cpu_period))
            if res.cpu_quota:
                _write(cpu / "cpu.cfs_quota_us", str(res.cpu_quota if res.cpu_quota > 0 else -1))
            if res.cpu_shares:
                _write(cpu / "cpu.shares", str(res.cpu_shares))
        cpuset = self._ctrl("cpuset", cid)
        if cpuset and res.cpuset_cpus:
            _write(cpuset / "cpuset.cpus", res.cpuset_cpus)
        mem = self._ctrl("memory", cid)
        if mem and res.memory_reservation:
            _write(mem / "memory.soft_limit_in_bytes", str(res.memory_reservation))
        blkio = self._ctrl("blkio", cid)
        if blkio and res.blkio_weight:
            for name in ("blkio.weight", "blkio.bfq.weight"):
                if (blkio / name).exists():
                    _write(blkio / name, str(res.blkio_weight))
                    break

    def freeze(self, cid: str, frozen: bool, timeout: float = 5.0) -> None:
        f = self._ctrl("freezer", cid)
        if not f:
            raise Internal("the freezer cgroup controller is not mounted")
        _write(f / "freezer.state", "FROZEN" if frozen else "THAWED")
        _wait_for(lambda: self.frozen(cid) == frozen, timeout, f"{'freeze' if frozen else 'thaw'} of {cid}")

    def frozen(self, cid: str) -> bool:
        f = self._ctrl("freezer", cid)
        try:
            return bool(f) and (f / "freezer.state").read_text().strip() == "FROZEN"  # type: ignore[operator]
        except OSError:
            return False

    def usage(self, cid: str) -> Usage:
        cpuacct = self._ctrl("cpuacct", cid)
        mem = self._ctrl("memory", cid)
        blkio = self._ctrl("blkio", cid)
        pids = self._ctrl("pids", cid)
        memory = limit = 0
        if mem:
            memory = _read_int(mem / "memory.usage_in_bytes")
            try:
                for line in (mem / "memory.stat").read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == "total_inactive_file":
                        memory = max(memory - int(v), 0)
            except OSError:
                pass
            limit = self.memory_limit(cid)
        rd = wr = 0
        if blkio:
            try:
                for line in (blkio / "blkio.throttle.io_service_bytes").read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[1] in ("Read", "Write"):
                        rd += int(parts[2]) if parts[1] == "Read" else 0
                        wr += int(parts[2]) if parts[1] == "Write" else 0
            except OSError:
                pass
        return Usage(cpu_ns=_read_int(cpuacct / "cpuacct.usage") if cpuacct else 0, memory=memory,
                     memory_limit=limit, block_read=rd, block_write=wr,
                     pids=_read_int(pids / "pids.current") if pids else 0)


def parse_mountinfo(text: str) -> tuple[Path | None, dict[str, Path]]:
    """(cgroup2 mount at /sys/fs/cgroup or None, {v1 controller: mount point})."""
    v2: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mount_point, fstype, super_opts = fields[4], rfields[0], rfields[2]
        if fstype == "cgroup2" and mount_point == "/sys/fs/cgroup":
            v2 = Path(mount_point)
        elif fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in V1_CONTROLLERS:
                    v1.setdefault(opt, Path(mount_point))
    return v2, v1


def detect(parent: str = "skiff", mountinfo: Path = Path("/proc/self/mountinfo")) -> Cgroups:
    """Picks the back-end the host uses: v2 when /sys/fs/cgroup is cgroup2, else the v1 controllers."""
    v2, v1 = parse_mountinfo(mountinfo.read_text())
    if v2 is not None:
        return CgroupV2(v2, parent)
    if not v1:
        raise Internal("no cgroup hierarchy is mounted")
    return CgroupV1(v1, parent)
