"""Interactive I/O on a real kernel: stdin through the monitor's socket, and a terminal made
inside the container whose master is passed to the monitor with SCM_RIGHTS."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.exec.v1 import exec_pb2
from skiff.execsvc import logs, stdio
from skiff.execsvc.exec import Execs
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import ContainerSpec, RootfsMount
from skiff.types.v1 import types_pb2

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]


def data(payload: bytes) -> bytes:
    return stdio.frames(exec_pb2.AttachStdinRequest(data=payload))


def resize(rows: int, cols: int) -> bytes:
    return stdio.resize_frame(types_pb2.TerminalSize(rows=rows, cols=cols))


def output(path: Path) -> tuple[str, set[str]]:
    entries = list(logs.read(path))
    return b"".join(e.data for e in entries).decode(), {e.stream for e in entries}


def start(runtime: Runtime, make_rootfs: MakeRootfs, script: str, **kw: object) -> socket.socket:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="c1", args=("sh", "-c", script), rootfs=rootfs, **kw))  # type: ignore[arg-type]
    runtime.start("c1")
    return stdio.connect(runtime.bundle("c1"), "attach.sock")


def test_stdin_pipe_and_eof(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    with start(runtime, make_rootfs, "cat; echo done; ls -l /proc/self/fd/0", open_stdin=True) as sock:
        big = b"x" * 100_000 + b"\n"  # more than a pipe holds: the monitor waits for the reader
        sock.sendall(data(b"hello\n") + data(big) + stdio.EOF_FRAME)
        assert runtime.wait("c1", timeout=30) == 0
    out, streams = output(runtime.log_path("c1"))
    assert out.startswith("hello\n" + "x" * 100_000 + "\ndone\n"), out[:200]
    assert "pipe:" in out and streams == {"stdout"}
    assert not (runtime.bundle("c1") / "attach.sock").exists()  # removed with the monitor


def test_without_stdin_it_is_dev_null(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    with start(runtime, make_rootfs, "cat; readlink /proc/self/fd/0; [ -t 0 ] || echo no-tty") as sock:
        sock.sendall(data(b"ignored\n"))
        assert runtime.wait("c1", timeout=30) == 0
    assert output(runtime.log_path("c1"))[0] == "/dev/null\nno-tty\n"


def test_terminal_made_in_the_container(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = "tty; echo first $(stty size); read x; stty size; echo got $x; " \
             "[ -t 0 ] && [ -t 2 ] && echo all-tty; echo err >&2; " \
             "echo sid-tty $(cut -d' ' -f6,7 /proc/self/stat); echo $TERM"
    with start(runtime, make_rootfs, script, terminal=True, open_stdin=True, console_size=(20, 60)) as sock:
        deadline = time.monotonic() + 30
        while "first" not in output(runtime.log_path("c1"))[0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sock.sendall(resize(33, 101) + data(b"hello\n"))
        assert runtime.wait("c1", timeout=30) == 0
    out, streams = output(runtime.log_path("c1"))
    lines = out.split("\r\n")
    assert "/dev/pts/0" in lines, out  # the container's own devpts instance
    assert "hello" in lines  # echoed by the terminal
    assert "first 20 60" in lines  # set by the init before the command ran
    assert "33 101" in lines and "got hello" in lines and "all-tty" in lines and "err" in lines, out
    assert "xterm" in lines
    sid, tty_nr = next(line for line in lines if line.startswith("sid-tty ")).split()[1:]
    assert sid == "1" and int(tty_nr) == os.makedev(136, 0)  # its session's controlling terminal
    assert streams == {"stdout"}  # one stream with a terminal


def test_terminal_needs_nothing_from_the_host(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    """The master fd the monitor holds is a ptmx of the container's devpts, not the host's."""
    with start(runtime, make_rootfs, "read x", terminal=True, open_stdin=True) as sock:
        shim_pid = json.loads((runtime.bundle("c1") / "start.json").read_text())["shim_pid"]
        fds = [os.readlink(f"/proc/{shim_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{shim_pid}/fd")]
        masters = [f for f in fds if f.endswith("ptmx")]
        assert masters, fds
        host_ptmx = os.stat("/dev/pts/ptmx") if os.path.exists("/dev/pts/ptmx") else None
        for fd in os.listdir(f"/proc/{shim_pid}/fd"):
            if os.readlink(f"/proc/{shim_pid}/fd/{fd}").endswith("ptmx") and host_ptmx is not None:
                assert os.stat(f"/proc/{shim_pid}/fd/{fd}").st_dev != host_ptmx.st_dev
        sock.sendall(data(b"\n"))
        assert runtime.wait("c1", timeout=30) == 0


def test_detach_leaves_stdin_open_and_another_client_continues(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    sock = start(runtime, make_rootfs, "while read x; do echo got $x; done; echo eof", open_stdin=True)
    sock.sendall(data(b"one\n"))
    sock.close()  # a client going away is not EOF
    log = runtime.log_path("c1")
    deadline = time.monotonic() + 30
    while "got one" not in output(log)[0]:
        assert time.monotonic() < deadline and runtime.state("c1").status == "running"
        time.sleep(0.05)
    with stdio.connect(runtime.bundle("c1"), "attach.sock") as again:
        again.sendall(data(b"two\n") + stdio.EOF_FRAME)
        assert runtime.wait("c1", timeout=30) == 0
    assert output(log)[0] == "got one\ngot two\neof\n"


def test_exec_with_a_terminal(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    rootfs, _ = make_rootfs()
    runtime.create(ContainerSpec(id="c1", args=("sleep", "600"), rootfs=rootfs))
    runtime.start("c1")
    execs = Execs(runtime)
    execs.start(exec_pb2.ExecSpec(task_id="c1", exec_id="e1", args=["sh", "-c", "tty; read x; stty size; echo $x"],
                                  tty=True, stdin=True))
    with stdio.connect(runtime.bundle("c1"), "exec-e1.sock") as sock:
        sock.sendall(resize(12, 34) + data(b"typed\n"))
        assert execs.wait("c1", "e1") == 0
    entries = list(execs.output("c1", "e1"))
    out = b"".join(e.data for e in entries).decode()
    assert "/dev/pts/0" in out.split("\r\n") and "12 34" in out and "typed" in out, out
    execs.start(exec_pb2.ExecSpec(task_id="c1", exec_id="e2", args=["cat"], stdin=True))
    with stdio.connect(runtime.bundle("c1"), "exec-e2.sock") as sock:
        sock.sendall(data(b"piped\n") + stdio.EOF_FRAME)
        assert execs.wait("c1", "e2") == 0
    assert b"".join(e.data for e in execs.output("c1", "e2")) == b"piped\n"
