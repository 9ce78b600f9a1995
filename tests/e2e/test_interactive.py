"""-i, -t, attach and detach through the real CLI; a terminal is driven from a pty of the test's own."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.e2e.conftest import VENV_BIN, Engine
from tests.e2e.test_survival import _serving


class Terminal:
    """The CLI on a pty of ours (its controlling terminal, so it gets SIGWINCH)."""

    def __init__(self, engine: Engine, *args: str, rows: int = 24, cols: int = 80):
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.saved = termios.tcgetattr(self.slave)
        self.out = b""

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [str(VENV_BIN / "skiff"), *args], stdin=self.slave, stdout=self.slave, stderr=self.slave,
            env=dict(os.environ, SKIFF_HOST=engine.host), start_new_session=True,
            preexec_fn=controlling_terminal,
        )

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def raw(self, timeout: float = 60) -> None:
        """Wait until the CLI has put the terminal in raw mode (no line editing, no echo)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.slave)[3] & termios.ICANON:
            assert time.monotonic() < deadline and self.proc.poll() is None, f"no raw mode: {self.out!r}"
            self.read(0.05)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float = 0.2) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.out += os.read(self.master, 65536)
            except OSError:  # EIO: nobody has the slave open any more
                time.sleep(timeout)

    def expect(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert time.monotonic() < deadline, f"{text!r} not seen in {self.out[-2000:]!r}"
            assert self.proc.poll() is None or text in self.out, f"CLI exited {self.proc.returncode}: {self.out!r}"
            self.read()

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"the CLI did not exit: {self.out[-2000:]!r}"
            self.read()
        self.read(0)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminals(engine: Engine):
    made: list[Terminal] = []

    def make(*args: str, **kw: int) -> Terminal:
        made.append(Terminal(engine, *args, **kw))
        return made[-1]

    yield make
    for t in made:
        t.close()


def test_stdin_pipe(skiff) -> None:
    r = skiff("run", "-i", "--rm", "busybox", "cat", input=b"hi\n", timeout=90)
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    r = skiff("run", "--rm", "busybox", "sh", "-c", "cat; readlink /proc/self/fd/0", input=b"unread\n", timeout=90)
    assert (r.returncode, r.stdout) == (0, "/dev/null\n"), r.stderr  # without -i: /dev/null, as before


def test_tty_size_resize_and_raw_mode_restored(skiff, terminals) -> None:
    t = terminals("run", "-it", "--rm", "busybox", "sh", "-c",
                  "tty; echo ready; while read x; do echo size $(stty size); done; echo bye", rows=30, cols=100)
    t.expect(b"/dev/pts/0\r\n")
    t.expect(b"ready")
    t.type(b"\r")
    t.expect(b"size 30 100")
    t.resize(40, 120)  # SIGWINCH for the CLI, which sends the new size
    for _ in range(60):
        t.type(b"\r")
        t.read(0.5)
        if b"size 40 120" in t.out:
            break
    assert b"size 40 120" in t.out, t.out[-1000:]
    t.type(b"\x04")  # ctrl-d in raw mode reaches the container's terminal: EOF for read
    assert t.wait() == 0
    assert b"bye" in t.out
    assert termios.tcgetattr(t.slave) == t.saved  # the CLI gave the terminal back as it found it


def test_detach_and_attach_again(skiff, terminals) -> None:
    name = "tty-detach"
    t = terminals("run", "-it", "--name", name, "busybox", "sh", "-c", "while read x; do echo got $x; done")
    t.type(b"one\r")
    t.expect(b"got one")
    t.type(b"\x10\x11")  # ctrl-p ctrl-q
    assert t.wait() == 0
    assert termios.tcgetattr(t.slave) == t.saved
    assert skiff("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    a = terminals("attach", "--detach-keys", "ctrl-a,x", name)
    a.raw()
    a.type(b"two\r")
    a.expect(b"got two")  # output written after the attach
    a.type(b"\x01x")
    assert a.wait() == 0
    assert skiff("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    skiff("rm", "-f", name, check=True)


def test_exec_it_and_exec_i(skiff, terminals) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    try:
        t = terminals("exec", "-it", cid, "sh", "-c", "tty; stty size; read x; echo ok $x; exit 3", rows=21, cols=77)
        t.expect(b"21 77")
        t.type(b"yo\r")
        t.expect(b"ok yo")
        assert t.wait() == 3
        assert b"/dev/pts/" in t.out
        r = skiff("exec", "-i", cid, "cat", input=b"piped\n")
        assert (r.returncode, r.stdout) == (0, "piped\n"), r.stderr
    finally:
        skiff("rm", "-f", cid)


def test_start_attach_interactive(skiff) -> None:
    cid = skiff("create", "-i", "busybox", "sh", "-c", "read x; echo got $x", check=True).stdout.strip()
    r = skiff("start", "-a", "-i", cid, input=b"hello\n", timeout=90)
    assert (r.returncode, r.stdout) == (0, "got hello\n"), r.stderr
    skiff("rm", cid, check=True)


def test_attach_after_execsvc_restart(engine: Engine, skiff, terminals) -> None:
    name = "tty-survivor"
    skiff("run", "-dit", "--name", name, "busybox", "sh", "-c", "while read x; do echo got $x; done", check=True)
    old = engine.service_pid("execsvc")
    os.kill(old, signal.SIGKILL)
    sock = f"unix://{engine.exec_root}/execsvc.sock"
    deadline = time.monotonic() + 60
    while not _serving(sock) or engine.service_pid("execsvc") == old:
        assert time.monotonic() < deadline, "execsvc did not come back"
        time.sleep(0.05)
    assert skiff("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    a = terminals("attach", name)
    a.raw()
    a.type(b"after\r")
    a.expect(b"got after")
    a.type(b"\x10\x11")
    assert a.wait() == 0
    skiff("rm", "-f", name, check=True)


def test_attach_proxies_signals(engine: Engine, skiff) -> None:
    name = "sig-proxied"
    skiff("run", "-d", "--name", name, "busybox", "sh", "-c",
          "trap 'echo got-usr1' USR1; while true; do echo tick; sleep 0.2; done", check=True)
    proc = subprocess.Popen([str(VENV_BIN / "skiff"), "attach", name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, env=dict(os.environ, SKIFF_HOST=engine.host))
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen, sent, deadline = b"", False, time.monotonic() + 60
        while b"got-usr1" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen[-500:]
            if b"tick" in seen and not sent:  # attached: the CLI's proxy is in place
                proc.send_signal(signal.SIGUSR1)
                sent = True
            select.select([proc.stdout], [], [], 0.5)
            seen += proc.stdout.read() or b""
    finally:
        proc.kill()
        proc.wait()
    assert skiff("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
    skiff("rm", "-f", name, check=True)


def test_exec_detach_leaves_the_process_running(skiff, terminals) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    try:
        t = terminals("exec", "-it", cid, "sh", "-c", "echo $$ > /tmp/exec.pid; echo started; exec sleep 600")
        t.expect(b"started")
        t.raw()
        t.type(b"\x10\x11")
        assert t.wait() == 0
        r = skiff("exec", cid, "sh", "-c", "kill -0 $(cat /tmp/exec.pid) && echo alive")
        assert r.stdout == "alive\n", (r.stdout, r.stderr)
    finally:
        skiff("rm", "-f", cid)


def _kill_execsvc_and_wait(engine: Engine) -> None:
    old = engine.service_pid("execsvc")
    os.kill(old, signal.SIGKILL)
    sock = f"unix://{engine.exec_root}/execsvc.sock"
    deadline = time.monotonic() + 60
    while not _serving(sock) or engine.service_pid("execsvc") == old:
        assert time.monotonic() < deadline, "execsvc did not come back"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["run", "attach"])
def test_attached_tty_session_survives_execsvc_sigkill(engine: Engine, skiff, terminals, how: str) -> None:
    """Both directions ride over the restart: keys typed afterwards reach the process, its output comes back."""
    name = f"tty-session-{how}"
    loop = "while read x; do echo got $x; [ \"$x\" = bye ] && exit 5; done"
    if how == "run":
        t = terminals("run", "-it", "--name", name, "busybox", "sh", "-c", loop)
    else:
        skiff("run", "-dit", "--name", name, "busybox", "sh", "-c", loop, check=True)
        t = terminals("attach", name)
    try:
        t.raw()
        t.type(b"one\r")
        t.expect(b"got one")
        _kill_execsvc_and_wait(engine)
        t.type(b"two\r")
        t.expect(b"got two")
        t.type(b"bye\r")
        t.expect(b"got bye")
        assert t.wait() == 5
        assert skiff("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "5"
    finally:
        skiff("rm", "-f", name)
