"""SIGKILL of execsvc during `exec`, `logs -f`, `stop -t` and an attached `run`: what a Docker user expects.

The container (and the exec'd process) keep running; the client rides over the
restart: output resumes without a lost or repeated line, the exit code is the real
one, and `stop` completes once execsvc is back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from tests.e2e.conftest import VENV_BIN, Engine


def _popen(engine: Engine, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, SKIFF_HOST=engine.host)
    return subprocess.Popen([str(VENV_BIN / "skiff"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _wait_for_line(proc: subprocess.Popen[str], want: str, timeout: float = 60) -> list[str]:
    """Reads proc's stdout until a line equal to ``want``; the lines read."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if lines[-1] == want:
            return lines
    raise AssertionError(f"never saw {want!r}; got {lines}")


def _kill_execsvc(engine: Engine) -> None:
    old = engine.service_pid("execsvc")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # skiffd restarts it
        try:
            if engine.service_pid("execsvc") != old:
                return
        except AssertionError:
            pass
        time.sleep(0.05)
    raise AssertionError("execsvc did not come back")


def _counter(n: int, pause: str = "0.1") -> str:
    return f"i=0; while [ $i -lt {n} ]; do echo n$i; i=$((i+1)); sleep {pause}; done"


def _seq(lines: list[str]) -> list[int]:
    return [int(x[1:]) for x in lines if re.fullmatch(r"n\d+", x)]


def test_exec_survives_execsvc_sigkill(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        proc = _popen(engine, "exec", cid, "sh", "-c", _counter(40) + "; exit 3")
        seen = _wait_for_line(proc, "n5")
        _kill_execsvc(engine)
        out, err = proc.communicate(timeout=120)
        nums = _seq(seen + out.splitlines())
        assert nums == list(range(40)), f"lines lost or repeated: {nums} {err}"
        assert proc.returncode == 3, err
        assert "Up " in skiff("ps", "--no-trunc").stdout  # the container never noticed
    finally:
        skiff("rm", "-f", cid)


def test_logs_follow_resumes_after_execsvc_sigkill(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", _counter(40) + "; exit 4", check=True).stdout.strip()
    try:
        proc = _popen(engine, "logs", "-f", cid)
        seen = _wait_for_line(proc, "n5")
        _kill_execsvc(engine)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert _seq(seen + out.splitlines()) == list(range(40)), err
        assert skiff("wait", cid, timeout=60).stdout.strip() == "4"
    finally:
        skiff("rm", "-f", cid)


def test_attached_run_survives_execsvc_sigkill(engine: Engine) -> None:
    proc = _popen(engine, "run", "--rm", "busybox", "sh", "-c", _counter(40) + "; exit 6")
    seen = _wait_for_line(proc, "n5")
    _kill_execsvc(engine)
    out, err = proc.communicate(timeout=120)
    assert _seq(seen + out.splitlines()) == list(range(40)), err
    assert proc.returncode == 6, err


def test_stop_completes_across_an_execsvc_sigkill(engine: Engine, skiff) -> None:
    # PID 1 ignores SIGTERM: stop must fall back to SIGKILL after -t, with execsvc killed meanwhile.
    cid = skiff("run", "-d", "busybox", "sh", "-c", "trap '' TERM; while :; do sleep 0.2; done",
                check=True).stdout.strip()
    try:
        time.sleep(0.5)  # the trap is set
        proc = _popen(engine, "stop", "-t", "4", cid)
        time.sleep(1)
        _kill_execsvc(engine)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == cid, (out, err)
        inspect = skiff("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.split()
        assert inspect == ["exited", "137"], inspect
    finally:
        skiff("rm", "-f", cid)
