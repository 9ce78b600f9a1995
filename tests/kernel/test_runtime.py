"""The native exec driver on a real kernel: isolation is asserted from inside the container."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.execsvc import logs
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, RootfsMount

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]


def run(rt: Runtime, make_rootfs: MakeRootfs, script: str, cid: str = "c1", **kw: object) -> tuple[int, str, str]:
    """Runs ``sh -c script`` to completion; returns (exit code, stdout, stderr) from the json log."""
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id=cid, args=("sh", "-c", script), rootfs=rootfs, **kw))  # type: ignore[arg-type]
    rt.start(cid)
    code = rt.wait(cid, timeout=20)
    entries = list(logs.read(rt.log_path(cid)))
    out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
    err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
    return code, out, err


def test_pid1_and_hostname(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, _ = run(runtime, make_rootfs, "echo $$; hostname", hostname="box1")
    assert (code, out) == (0, "1\nbox1\n")
    st = runtime.state("c1")
    assert st.status == "exited" and st.exit_code == 0 and st.started_at and st.finished_at


def test_sees_only_its_own_processes(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, _ = run(runtime, make_rootfs, "sleep 0.1 & ls /proc | grep -E '^[0-9]+$'")
    pids = sorted(int(p) for p in out.split())
    assert code == 0 and pids[0] == 1 and len(pids) <= 4 and max(pids) < 10, pids


def test_root_dev_and_sys(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = """
        cat /etc/motd
        echo discard > /dev/null && head -c 4 /dev/zero | wc -c
        ls /dev/pts
        ls -l /dev/ptmx | grep -q -- '-> pts/ptmx' && echo ptmx-link
        grep ' /sys ' /proc/mounts | grep -q ' ro,' && echo sys-ro
        mkdir /sys/kernel/skiff-probe 2>/dev/null || echo sys-unwritable
        grep -c overlay /proc/mounts
    """
    code, out, err = run(runtime, make_rootfs, script)
    assert code == 0, err
    motd, zeros, pts, link, sysro, sysunw, overlays = out.splitlines()
    assert motd == "skiff demo image (busybox)"
    assert zeros == "4"
    assert pts == "ptmx"  # a fresh devpts instance: none of the host's terminals
    assert (link, sysro, sysunw, overlays) == ("ptmx-link", "sys-ro", "sys-unwritable", "1")


def test_cgroup_limits_hold_the_container(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    spec = ContainerSpec(id="lim", args=("sleep", "30"), rootfs=rootfs, memory_limit=64 << 20, pids_limit=20)
    runtime.create(spec)
    pid = runtime.start("lim")
    cg = runtime.cgroups
    assert cg.memory_limit("lim") == 64 << 20
    assert cg.pids_limit("lim") == 20
    assert pid in cg.pids("lim")
    if cg.version == 1:
        mem = Path(cg.oom_file("lim") or "").parent
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert str(pid) in (mem / "cgroup.procs").read_text().split()
    runtime.kill("lim", signal.SIGKILL)
    assert runtime.wait("lim", timeout=10) == 128 + signal.SIGKILL
    assert runtime.state("lim").oom_killed is False


def test_writes_land_in_the_upper_dir_only(runtime: Runtime, make_rootfs: MakeRootfs, busybox_lower: Path) -> None:
    rootfs, upper = make_rootfs()
    runtime.create(ContainerSpec(id="w", args=("sh", "-c", "echo hi > /skiff-written"), rootfs=rootfs))
    runtime.start("w")
    assert runtime.wait("w", timeout=10) == 0
    assert (upper / "skiff-written").read_text() == "hi\n"
    assert not (busybox_lower / "skiff-written").exists()
    assert not Path("/skiff-written").exists()


def test_exit_code(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    assert run(runtime, make_rootfs, "exit 3")[0] == 3


def test_command_not_found(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="nf", args=("no-such-cmd",), rootfs=rootfs))
    with pytest.raises(errors.FailedPrecondition) as e:
        runtime.start("nf")
    assert e.value.reason == errors.COMMAND_NOT_FOUND
    assert 'exec: "no-such-cmd": executable file not found in $PATH' in str(e.value)
    st = runtime.state("nf")
    assert st.status == "created" and "not found" in st.error


def test_command_not_executable(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="nx", args=("/bin/notexec",), rootfs=rootfs))
    with pytest.raises(errors.FailedPrecondition) as e:
        runtime.start("nx")
    assert e.value.reason == errors.COMMAND_NOT_EXECUTABLE


def test_env_cwd_and_user(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(
        runtime,
        make_rootfs,
        'echo "$GREETING"; pwd; id -u; id -g',
        env=("GREETING=hello world",),
        cwd="/made/for/me",
        user="nobody",
    )
    assert (code, out) == (0, "hello world\n/made/for/me\n65534\n65534\n"), err
    code, out, _ = run(runtime, make_rootfs, "id -u; id -g", cid="c2", user="1234:4321")
    assert (code, out) == (0, "1234\n4321\n")


SURVIVOR = """
import os, signal, sys
from pathlib import Path
from skiff.execsvc.cgroups import detect
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, RootfsMount
exec_root, shim, parent, *opts = sys.argv[1:]
rt = Runtime(Path(exec_root), Path(shim), cgroups=detect(parent))
rt.create(ContainerSpec(id="s", args=("sh", "-c", "sleep 2; echo done; exit 7"),
                        rootfs=RootfsMount("overlay", "overlay", tuple(opts))))
rt.start("s")
os.kill(os.getpid(), signal.SIGKILL)  # execsvc dies right after the start
"""


def test_container_survives_its_caller(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    cmd = [sys.executable, "-c", textwrap.dedent(SURVIVOR), str(runtime.exec_root), str(runtime.shim_path)]
    proc = subprocess.run([*cmd, runtime.cgroups.parent, *rootfs.options], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    # A new Runtime on the same exec root: everything comes from disk.
    rt2 = Runtime(runtime.exec_root, runtime.shim_path, cgroups=runtime.cgroups)
    assert rt2.list() == ["s"]
    assert rt2.state("s").status == "running"
    assert rt2.wait("s", timeout=10) == 7
    assert [e.data for e in rt2.logs("s")] == [b"done\n"]


def test_logs_keep_streams_apart_and_follow(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    script = "echo out1; echo err1 >&2; sleep 0.6; echo out2; printf 'q\"\\\\ \\t\\001 \\303\\251 \\377 tail'"
    runtime.create(ContainerSpec(id="lg", args=("sh", "-c", script), rootfs=rootfs))
    runtime.start("lg")
    seen: list[tuple[str, bytes, str]] = []
    for entry in runtime.logs("lg", follow=True):
        seen.append((entry.stream, entry.data, runtime.state("lg").status))
    assert [(s, d) for s, d, _ in seen] == [
        ("stdout", b"out1\n"),
        ("stderr", b"err1\n"),
        ("stdout", b"out2\n"),
        # partial last line, JSON escapes, valid UTF-8 kept, an invalid byte replaced
        ("stdout", b'q"\\ \t\x01 \xc3\xa9 \xef\xbf\xbd tail'),
    ]
    assert seen[0][2] == "running"  # followed live, not read after the fact
    assert [e.data for e in runtime.logs("lg", tail=1)] == [seen[-1][1]]
    assert runtime.wait("lg", timeout=5) == 0


def test_delete_refuses_a_running_container_unless_forced(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="d", args=("sleep", "30"), rootfs=rootfs))
    runtime.start("d")
    with pytest.raises(errors.FailedPrecondition) as e:
        runtime.delete("d")
    assert e.value.reason == errors.CONTAINER_RUNNING
    with pytest.raises(errors.FailedPrecondition):
        runtime.start("d")
    runtime.delete("d", force=True)
    assert runtime.list() == []
    assert not runtime.cgroups.exists("d")
    with pytest.raises(errors.NotFound):
        runtime.state("d")


def test_restart_after_exit(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    assert run(runtime, make_rootfs, "echo run")[0] == 0
    runtime.start("c1")
    assert runtime.wait("c1", timeout=10) == 0
    assert [e.data for e in runtime.logs("c1")] == [b"run\n", b"run\n"]


def test_idle_monitor_is_small(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="m", args=("sleep", "30"), rootfs=rootfs))
    runtime.start("m")
    shim_pid = int((runtime.bundle("m") / "shim.pid").read_text())
    time.sleep(0.1)
    rollup = Path(f"/proc/{shim_pid}/smaps_rollup").read_text()
    pss_kb = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
    print(f"idle monitor PSS: {pss_kb} kB")
    assert pss_kb < 1024
    # The monitor is detached: its own session, not a child of the caller.
    assert os.getsid(shim_pid) == shim_pid


def test_follow_stops_when_asked(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="f", args=("sh", "-c", "echo a; sleep 30"), rootfs=rootfs))
    runtime.start("f")
    stop = threading.Event()
    got = []
    for entry in runtime.logs("f", follow=True, stop=stop):
        got.append(entry.data)
        stop.set()
    assert got == [b"a\n"]


def test_oom_kill_is_reported(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    if Path("/proc/swaps").read_text().count("\n") > 1:
        pytest.skip("swap is on: the container would swap instead of being OOM-killed")
    code, out, _ = run(
        runtime, make_rootfs, "x=$(head -c 30000000 /dev/zero | tr '\\0' a); echo survived", memory_limit=8 << 20
    )
    st = runtime.state("c1")
    assert (code, out, st.oom_killed) == (137, "", True)
