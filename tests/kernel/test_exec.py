"""`skiff exec` on a real kernel: a second process joins a running container's
namespaces, cgroup and security through `skiff-shim exec` and exec_init.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc.exec import Execs
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.security import DEFAULT_CAPS, cap_mask
from skiff.execsvc.spec import ContainerSpec, RootfsMount

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]
DOCKER_CAPS = f"{cap_mask(DEFAULT_CAPS):016x}"


@pytest.fixture
def running(runtime: Runtime, make_rootfs: MakeRootfs) -> Execs:
    rootfs, _ = make_rootfs()
    script = "echo hi > /tmp/mark; exec sleep 600"
    runtime.create(ContainerSpec(id="c1", args=("sh", "-c", script), rootfs=rootfs, hostname="box",
                                 env=("FOO=container",), cwd="/tmp"))
    runtime.start("c1")
    return Execs(runtime)


def run(execs: Execs, *args: str, eid: str = "e1", **kw: object) -> tuple[int, str, str]:
    execs.start(exec_pb2.ExecSpec(task_id="c1", exec_id=eid, args=args, **kw))  # type: ignore[arg-type]
    entries = list(execs.output("c1", eid))
    code = execs.wait("c1", eid)
    out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
    err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
    return code, out, err


def status(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_exec_joins_the_containers_namespaces(running: Execs) -> None:
    code, out, err = run(running, "sh", "-c", "echo $$; hostname; cat /proc/1/cmdline; echo; cat /tmp/mark; pwd; "
                                              "echo $FOO; echo oops >&2; exit 3")
    assert code == 3
    pid, host, cmdline, mark, cwd, foo = out.splitlines()
    assert int(pid) > 1 and host == "box"
    assert cmdline.split("\0")[:2] == ["sleep", "600"]
    assert (mark, cwd, foo) == ("hi", "/tmp", "container")
    assert err == "oops\n"


def test_exec_has_the_containers_security(running: Execs) -> None:
    code, out, err = run(running, "grep", "-E", "^(Cap|NoNewPrivs|Seccomp)", "/proc/self/status")
    assert code == 0, err
    st = status(out)
    assert (st["CapEff"], st["CapBnd"]) == (DOCKER_CAPS, DOCKER_CAPS)
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("1", "2")


def test_exec_cgroup_user_env_and_cwd(running: Execs, runtime: Runtime) -> None:
    code, out, _ = run(running, "sh", "-c", "id -u; pwd; echo $FOO; ls /proc/self/fd | wc -l",
                       user="nobody", env=["FOO=exec"], working_dir="/etc")
    assert code == 0
    assert out.split()[:3] == ["65534", "/etc", "exec"]
    assert int(out.split()[3]) <= 4  # 0, 1, 2 and ls's own directory fd
    # The container's cgroup (no cgroup namespace: the paths read the same from both sides).
    code, out, _ = run(running, "cat", "/proc/self/cgroup", eid="e2")
    assert code == 0
    assert out == Path(f"/proc/{runtime.state('c1').pid}/cgroup").read_text()


def test_exec_ignores_no_signal(running: Execs) -> None:
    """No signal disposition of the engine's parent reaches an exec'd process, glibc's own 32 and
    33 included (GNU make, say, ignores those: the suite under `make test` checks it)."""
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        code, out, err = run(running, "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status", eid="sig")
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert code == 0, err
    assert out.splitlines() == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"], out


def test_exec_command_not_found_and_not_executable(running: Execs) -> None:
    with pytest.raises(errors.FailedPrecondition) as e:
        running.start(exec_pb2.ExecSpec(task_id="c1", exec_id="e2", args=["nosuch"]))
    assert e.value.reason == errors.COMMAND_NOT_FOUND
    with pytest.raises(errors.FailedPrecondition) as e:
        running.start(exec_pb2.ExecSpec(task_id="c1", exec_id="e3", args=["/bin/notexec"]))
    assert e.value.reason == errors.COMMAND_NOT_EXECUTABLE
    assert not [p for p in os.listdir(running.runtime.bundle("c1")) if p.startswith("exec-")]


def test_exec_into_a_stopped_container_fails(running: Execs, runtime: Runtime) -> None:
    runtime.kill("c1", 9)
    runtime.wait("c1", timeout=10)
    with pytest.raises(errors.FailedPrecondition) as e:
        running.start(exec_pb2.ExecSpec(task_id="c1", exec_id="e4", args=["true"]))
    assert e.value.reason == errors.CONTAINER_NOT_RUNNING
    assert str(e.value) == "Container c1 is not running"
