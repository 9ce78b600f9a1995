"""The survival matrix for the other services: apiserver, graphsvc and netsvc SIGKILLed
during `run`, `exec`, `logs -f` and `stop` (execsvc: test_survival_more.py).

What a user expects: the container and its exit code are never lost, no log line is
lost; the command either completes, or (the gateway itself died under it) fails with
a clear message and asking again works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import Engine
from tests.e2e.test_survival_more import _counter, _popen, _seq, _wait_for_line

N = 30


def _kill(engine: Engine, name: str) -> None:
    old = engine.service_pid(name)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # skiffd restarts it
        try:
            if engine.service_pid(name) != old:
                return
        except AssertionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{name} did not come back")


def _settle(engine: Engine) -> None:
    """Until the engine answers again (the gateway may be restarting)."""
    deadline = time.monotonic() + 60
    while engine.skiff("version").returncode != 0:
        assert time.monotonic() < deadline, "the engine did not answer again"
        time.sleep(0.1)


def _clear_failure(proc: subprocess.Popen[str], err: str) -> None:
    """A command cut off by the gateway's death says so in one clear line, no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    assert err.strip(), "failed without a message"


def _retry(skiff, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Asked again until it answers (the gateway may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        r = skiff(*args, timeout=timeout)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


SERVICES = ["apiserver", "graphsvc", "netsvc"]


@pytest.mark.parametrize("service", SERVICES)
def test_run_attached(engine: Engine, skiff, service: str) -> None:
    name = f"surv-run-{service}"
    proc = _popen(engine, "run", "--name", name, "busybox", "sh", "-c", _counter(N) + "; exit 6")
    try:
        seen = _wait_for_line(proc, "n5")
        _kill(engine, service)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 6:
            assert _seq(seen + out.splitlines()) == list(range(N)), err
        else:
            assert service == "apiserver", (proc.returncode, err)
            _clear_failure(proc, err)
        _settle(engine)
        assert _retry(skiff, "wait", name).stdout.strip() == "6"
        logs = _retry(skiff, "logs", name)
        assert _seq(logs.stdout.splitlines()) == list(range(N)), logs.stderr
    finally:
        _settle(engine)
        skiff("rm", "-f", name)


@pytest.mark.parametrize("service", SERVICES)
def test_exec(engine: Engine, skiff, service: str) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        proc = _popen(engine, "exec", cid, "sh", "-c", _counter(N) + "; exit 3")
        seen = _wait_for_line(proc, "n5")
        _kill(engine, service)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 3:
            assert _seq(seen + out.splitlines()) == list(range(N)), err
        else:
            assert service == "apiserver", (proc.returncode, err)
            _clear_failure(proc, err)
        _settle(engine)
        # The container never noticed, and exec works again.
        assert _retry(skiff, "inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        again = skiff("exec", cid, "sh", "-c", "echo back; exit 4")
        assert (again.returncode, again.stdout) == (4, "back\n"), again.stderr
    finally:
        _settle(engine)
        skiff("rm", "-f", cid)


@pytest.mark.parametrize("service", SERVICES)
def test_logs_follow(engine: Engine, skiff, service: str) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", _counter(N) + "; exit 4", check=True).stdout.strip()
    try:
        proc = _popen(engine, "logs", "-f", cid)
        seen = _wait_for_line(proc, "n5")
        _kill(engine, service)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            assert _seq(seen + out.splitlines()) == list(range(N)), err
        else:
            assert service == "apiserver", (proc.returncode, err)
            _clear_failure(proc, err)
        _settle(engine)
        again = _retry(skiff, "logs", "-f", cid, timeout=90)  # follows to the end again
        assert _seq(again.stdout.splitlines()) == list(range(N)), again.stderr
        assert skiff("wait", cid, timeout=60).stdout.strip() == "4"
    finally:
        _settle(engine)
        skiff("rm", "-f", cid)


@pytest.mark.parametrize("service", SERVICES)
def test_stop(engine: Engine, skiff, service: str) -> None:
    # PID 1 ignores SIGTERM: stop falls back to SIGKILL after -t, with the service killed meanwhile.
    cid = skiff("run", "-d", "busybox", "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.2; done",
                check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while "ready" not in skiff("logs", cid).stdout:  # the trap is set
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc = _popen(engine, "stop", "-t", "3", cid)
        time.sleep(1)
        _kill(engine, service)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            assert out.strip() == cid, (out, err)
        else:
            assert service == "apiserver", (proc.returncode, err)
            _clear_failure(proc, err)
            _settle(engine)
            r = _retry(skiff, "stop", "-t", "3", cid)  # asking again completes it
            assert r.returncode == 0, r.stderr
        _settle(engine)
        state = _retry(skiff, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.split()
        assert state == ["exited", "137"], state
    finally:
        _settle(engine)
        skiff("rm", "-f", cid)


def test_run_rm_is_removed_when_the_gateway_died_under_it(engine: Engine, skiff) -> None:
    """Nothing left behind: the restarted gateway removes a --rm container whose client it lost."""
    name = "surv-run-rm"
    proc = _popen(engine, "run", "--rm", "--name", name, "busybox", "sh", "-c", _counter(15) + "; exit 2")
    try:
        _wait_for_line(proc, "n3")
        _kill(engine, "apiserver")
        proc.communicate(timeout=120)
        _settle(engine)
        deadline = time.monotonic() + 90
        while name in skiff("ps", "-a", "--format", "{{.Names}}").stdout.split():
            assert time.monotonic() < deadline, "the --rm container was never removed"
            time.sleep(0.3)
    finally:
        _settle(engine)
        skiff("rm", "-f", name)
