"""Warm slots: container starts without a cgroup mkdir, a shim spawn or a cgroup move.

On cgroup v1 the first write of a pid into a ``cgroup.procs`` waits for an RCU grace period
(5-18 ms here), and a container's cgroups are directories in every hierarchy. A slot is made
ahead of time, in the background:

- cgroup directories ``<parent>/.slot-<n>`` in every hierarchy;
- a standby ``skiff-shim standby`` monitor (in execsvc's own cgroup, never in the slot's),
  which has cloned the future PID 1 (new pid, uts and ipc namespaces) and moved it into the
  slot's cgroups; that child waits on a socket.

A start whose clone flags fit takes a slot: its directories are renamed to the container's
(rename(2) within the parent; cgroup v1 only, cgroup2 has no rename), the limits are written,
then the bundle is handed to the monitor over the slot's socket, which releases the child
(it unshares the mount and, for ``--network none`` without a path, the network namespace
then) and reports the start as a cold shim does. Anything else (other namespaces, a
user-namespace remap, cgroup v2, an empty pool) takes the cold path, unchanged.

Clean-up: a monitor whose socket reaches EOF before a go (execsvc exited or was killed)
kills its child and exits; execsvc removes the slots' directories when it stops and any
``.slot-*`` left by an earlier execsvc when it starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from skiff.common.errors import FailedPrecondition, Internal

from .cgroups import Cgroups, CgroupV1, _kill_all, _read_pids, _rmdir

log = logging.getLogger("skiff.execsvc.slots")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: what a standby child is cloned with; a container's flags must include all of these
STANDBY_FLAGS = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
#: what the child may unshare at its release (anything else: the cold path)
RELEASE_FLAGS = CLONE_NEWNS | CLONE_NEWNET
PREFIX = ".slot-"
#: how long a standby shim may take to report ready (a fork, a clone and a few writes)
READY_TIMEOUT = 10.0
#: ``$SKIFF_WARM_SLOTS``: slots kept ready (0: off). 4 rather than 2: back-to-back starts (a
#: loop of create+start+wait+rm) leave less than the refill delay between them, and took cold
#: starts once 2 were used (measured: median 28.9 ms with 4, 30.4 with 2, 35.2 cold).
DEFAULT_SIZE = 4
#: a refill waits until no start has come for this long (at most REFILL_MAX_DELAY after the first
#: start that asked): making a slot costs CPU and holds the kernel's cgroup_mutex for a grace
#: period, which the container just started (its run, its wait, its removal) should not share
#: (measured, starts 0.3 s apart: median 27.1 ms with 50 ms, 31.4 ms with 5 ms, 40.0 cold).
#: ``$SKIFF_WARM_SLOTS_DELAY_MS`` changes it (for measurements).
REFILL_DELAY = float(os.environ.get("SKIFF_WARM_SLOTS_DELAY_MS", "50")) / 1000
REFILL_MAX_DELAY = 0.5


def configured_size() -> int:
    try:
        return max(int(os.environ.get("SKIFF_WARM_SLOTS", DEFAULT_SIZE)), 0)
    except ValueError:
        return DEFAULT_SIZE


def unsupported(cgroups: Cgroups) -> str | None:
    """Why this cgroup back-end cannot have warm slots, or None."""
    if not isinstance(cgroups, CgroupV1):
        # cgroup2 has no rename (the kernel's cgroup2 refuses it: EPERM), so a slot's group cannot
        # become the container's; clone3(CLONE_INTO_CGROUP) is the way to skip the move there.
        return "cgroup v2 cannot rename a group"
    return None


def fits(clone_flags: int) -> bool:
    """A container cloned with ``clone_flags`` can start from a slot."""
    return clone_flags & STANDBY_FLAGS == STANDBY_FLAGS and clone_flags & ~(STANDBY_FLAGS | RELEASE_FLAGS) == 0


@dataclass
class Slot:
    name: str
    sock: socket.socket
    #: host pid of the standby child (the future PID 1) and of its monitor
    pid: int
    shim_pid: int
    #: the renamed groups, once taken (for a rename back if needed)
    cid: str = ""
    made: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        """The monitor says nothing while standing by: anything readable is an EOF (it exited)."""
        try:
            poller = select.poll()  # not select(): execsvc's descriptors may be numbered past 1024
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SlotPool:
    """``size`` warm slots under the cgroup parent, refilled in the background after each use."""

    def __init__(self, cgroups: Cgroups, shim: Path, size: int = DEFAULT_SIZE):
        reason = unsupported(cgroups)
        if reason is not None:
            raise FailedPrecondition(f"warm slots: {reason}")
        assert isinstance(cgroups, CgroupV1)
        self.cgroups: CgroupV1 = cgroups
        self.shim = Path(shim)
        self.size = size
        self._ready: list[Slot] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._filling = False
        self._counter = 0
        self._failures = 0
        #: when the next refill may start (monotonic; 0: now) and the first refill() not yet served
        self._due = 0.0
        self._asked = 0.0
        self._thread: threading.Thread | None = None
        #: taken / made counters (for tests and logs)
        self.taken = 0
        self.made = 0

    # ---- life ----------------------------------------------------------

    def start(self) -> None:
        """Removes what an earlier execsvc left and starts filling."""
        self.remove_leftovers()
        self._thread = threading.Thread(target=self._fill_loop, name="warm-slots", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Drops every slot: the monitors see EOF, kill their child and exit; the groups go."""
        with self._lock:
            self._closed = True
            slots, self._ready = self._ready, []
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=READY_TIMEOUT + 5)
        for s in slots:
            s.close()
        for s in slots:
            self._remove_groups(s.name)
        self.remove_leftovers()

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def wait_ready(self, n: int, timeout: float) -> bool:
        """Until ``n`` slots are ready (tests); False at the timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._ready) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._wake.wait(min(left, 0.05))
            return True

    # ---- the start path ------------------------------------------------

    def take(self, clone_flags: int, cid: str) -> Slot | None:
        """A ready slot whose groups are now ``cid``'s, or None (the cold path)."""
        if not fits(clone_flags):
            return None
        while True:
            with self._lock:
                if not self._ready:
                    return None
                slot = self._ready.pop(0)  # refilled after the start (refill()), not during it
            if not slot.alive():
                slot.close()
                self._remove_groups_async(slot)
                continue
            if self._rename(slot, cid):
                slot.cid = cid
                self.taken += 1
                return slot
            slot.close()
            self._remove_groups_async(slot)
            return None

    def refill(self) -> None:
        """Wakes the filler: called once a start from a slot is over, so that the new slot's
        cgroup move (which holds the kernel's cgroup_mutex for a grace period) does not delay
        that start's own cgroup writes."""
        now = time.monotonic()
        with self._lock:
            if not self._asked:
                self._asked = now
            self._due = min(now + REFILL_DELAY, self._asked + REFILL_MAX_DELAY)
            self._wake.notify_all()

    def _rename(self, slot: Slot, cid: str) -> bool:
        """The slot's groups become the container's in every hierarchy, or (undone) none."""
        pairs = [(d.parent / slot.name, d.parent / cid) for d in self.cgroups._dirs(cid)]
        done: list[tuple[Path, Path]] = []
        for src, dst in pairs:
            try:
                os.rename(src, dst)  # EEXIST/ENOTEMPTY if dst exists: never replaces a group
            except OSError as e:
                log.warning("warm slot %s: rename to %s: %s; cold start", slot.name, dst, e.strerror)
                for s, d in reversed(done):
                    with contextlib.suppress(OSError):
                        os.rename(d, s)
                return False
            done.append((src, dst))
        return True

    # ---- filling -------------------------------------------------------

    def _fill_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    if len(self._ready) >= self.size:
                        self._asked = 0.0
                        self._wake.wait()
                    elif self._due > time.monotonic():
                        self._wake.wait(self._due - time.monotonic())
                    else:
                        break
                if self._closed:
                    return
            try:
                slot = self._make()
            except Exception as e:  # logged; the cold path still works
                self._failures += 1
                log.warning("warm slot not made (%s); retrying in %ds", e, min(self._failures, 30))
                with self._lock:
                    self._wake.wait(min(self._failures, 30))
                continue
            self._failures = 0
            with self._lock:
                if self._closed:
                    keep = False
                else:
                    self._ready.append(slot)
                    keep = True
                self._wake.notify_all()
            if not keep:
                slot.close()
                self._remove_groups(slot.name)

    def _make(self) -> Slot:
        self._counter += 1
        name = f"{PREFIX}{os.getpid()}-{self._counter}"
        procs = self.cgroups.create(name)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                proc = subprocess.run(
                    [str(self.shim), "standby", str(theirs.fileno()), f"{STANDBY_FLAGS:#x}", *procs],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, cwd="/", timeout=READY_TIMEOUT,
                )
            finally:
                theirs.close()
            if proc.returncode != 0:
                raise Internal(proc.stderr.decode(errors="replace").strip() or f"shim exit {proc.returncode}")
            ours.settimeout(READY_TIMEOUT)
            msg = ours.recv(4096).decode(errors="replace")
            ours.settimeout(None)
            if not msg.startswith("r"):
                raise Internal(msg[1:] or "the standby shim exited without a word")
            pid, _, shim_pid, _ = (int(x) for x in msg[1:].split())
        except BaseException:
            ours.close()
            self._remove_groups(name)
            raise
        self.made += 1
        return Slot(name=name, sock=ours, pid=pid, shim_pid=shim_pid)

    # ---- removal -------------------------------------------------------

    def _remove_groups(self, name: str, timeout: float = 5.0) -> None:
        """Kills what is in the slot's groups (never by a remembered pid: it may be reused) and removes them."""
        dirs = [d.parent / name for d in self.cgroups._dirs(name)]
        deadline = time.monotonic() + timeout
        while True:
            left = [d for d in dirs if d.exists() and not _rmdir(d)]
            if not left:
                return
            for d in left:
                _kill_all(_read_pids(d / "cgroup.procs"))
            if time.monotonic() > deadline:
                log.warning("warm slot %s: groups still busy after %ss", name, timeout)
                return
            time.sleep(0.02)

    def _remove_groups_async(self, slot: Slot) -> None:
        threading.Thread(target=self._remove_groups, args=(slot.name,), daemon=True,
                         name="warm-slot-remove").start()

    def remove_leftovers(self) -> None:
        """``.slot-*`` groups under the parent (an earlier execsvc's): their processes killed, removed."""
        names: set[str] = set()
        for d in self.cgroups._dirs("x"):
            with contextlib.suppress(OSError):
                names.update(p.name for p in d.parent.iterdir() if p.name.startswith(PREFIX) and p.is_dir())
        with self._lock:
            live = {s.name for s in self._ready}
        for name in sorted(names - live):
            self._remove_groups(name)
