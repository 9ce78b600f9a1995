"""The launcher's lean path (`run` without grpcio) against the full CLI: same output, same status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import VENV_BIN, Engine

LAUNCHER = VENV_BIN / "skiff"


def both(engine: Engine, *args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    env = dict(os.environ, SKIFF_HOST=engine.host)
    lean = subprocess.run([str(LAUNCHER), *args], capture_output=True, text=True, env=env, timeout=120)
    full = subprocess.run([sys.executable, "-m", "skiff.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    return lean, full


def test_the_launcher_is_installed() -> None:
    first = LAUNCHER.read_text().splitlines()[0]
    if not first.endswith(" -IS"):
        pytest.skip("skiff is the plain console script here (no `make setup` launcher)")


@pytest.mark.parametrize("args", [
    ("run", "--rm", "--network", "none", "busybox", "true"),
    ("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"),
    ("run", "--rm", "--network=none", "busybox", "nosuchcommand"),
    ("run", "--rm", "busybox", "/etc/motd"),
    ("run", "--rm", "busybox", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo"),
])
def test_same_as_the_full_cli(engine: Engine, args: tuple[str, ...]) -> None:
    lean, full = both(engine, *args)
    assert (lean.returncode, lean.stdout, lean.stderr) == (full.returncode, full.stdout, full.stderr)


def test_detached_named_run(engine: Engine) -> None:
    env = dict(os.environ, SKIFF_HOST=engine.host)
    r = subprocess.run([str(LAUNCHER), "run", "-d", "--name", "lean-d", "busybox", "sh", "-c", "echo hello"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert engine.skiff("wait", "lean-d", check=True).stdout.strip() == "0"
    assert engine.skiff("logs", cid).stdout == "hello\n"
    # a second run with the same name: create fails, the full CLI reports it as always
    lean, full = both(engine, "run", "-d", "--name", "lean-d", "busybox", "true")
    assert lean.returncode == full.returncode == 125 and lean.stderr == full.stderr
    engine.skiff("rm", "lean-d", check=True)


def test_rm_leaves_nothing(engine: Engine) -> None:
    before = engine.skiff("ps", "-aq", check=True).stdout
    lean, _ = both(engine, "run", "--rm", "busybox", "true")
    assert lean.returncode == 0
    assert engine.skiff("ps", "-aq", check=True).stdout == before


def test_signals_are_forwarded_to_the_container(engine: Engine) -> None:
    env = dict(os.environ, SKIFF_HOST=engine.host)
    proc = subprocess.Popen([str(LAUNCHER), "run", "--rm", "busybox", "sh", "-c",
                             "trap 'echo got TERM; exit 9' TERM; echo ready; while true; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.2)  # the trap is set before "ready"; give the shell its loop
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "got TERM" in out and proc.returncode == 9, err


def test_create_start_wait_rm(engine: Engine) -> None:
    env = dict(os.environ, SKIFF_HOST=engine.host)

    def lean(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(LAUNCHER), *args], capture_output=True, text=True, env=env, timeout=120)

    r = lean("create", "--name", "lean-c", "busybox", "sh", "-c", "exit 4")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert engine.skiff("inspect", "--format", "{{.Id}}", "lean-c", check=True).stdout.strip() == cid
    assert lean("start", "lean-c").stdout == "lean-c\n"
    assert lean("wait", "lean-c", cid).stdout == "4\n4\n"
    assert lean("rm", "lean-c").stdout == "lean-c\n"
    # errors: nothing was done, the full CLI reports them exactly as it always does
    for args in (("start", "lean-c"), ("wait", "lean-c"), ("rm", "lean-c"), ("rm", "-f", "lean-c")):
        got, full = both(engine, *args)
        assert (got.returncode, got.stdout, got.stderr) == (full.returncode, full.stdout, full.stderr)
        assert got.returncode != 0 and "lean-c" in got.stderr
