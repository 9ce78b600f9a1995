"""The launcher's lean path (`run` without grpcio) against the full CLI: same output, same status."""

from __future__ import annotations

import os
import re
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


def _timeless(table: str) -> list[list[str]]:
    """The cells of a `ps` table with each duration's number masked."""
    masked = re.sub(r"\d+ (second|minute)s?\b", r"N \1", table)
    return [re.split(r"\s{3,}", line.strip()) for line in masked.splitlines()]


def test_ps_is_the_full_cli_output(engine: Engine) -> None:
    """Byte for byte, with created, exited (codes, long commands, arguments) containers; and
    what the lean path does not render (links) still shows, from the full CLI."""
    made = []
    for args in (("--name", "lean-ps-a", "busybox", "true"),
                 ("--name", "lean-ps-b", "busybox", "sh", "-c", "echo a long command, cut at twenty")):
        made.append(engine.skiff("create", *args, check=True).stdout.strip())
    engine.skiff("run", "--name", "lean-ps-c", "busybox", "sh", "-c", "exit 3", check=False)
    made.append("lean-ps-c")
    try:
        for flags in ((), ("-a",), ("-a", "--no-trunc"), ("-aq",), ("-q", "--no-trunc", "-a")):
            for _ in range(5):  # "N seconds ago" may tick between the two commands: try again
                lean, full = both(engine, "ps", *flags)
                if lean.stdout == full.stdout:
                    break
            assert (lean.returncode, lean.stderr) == (full.returncode, full.stderr)
            # On a loaded machine the full CLI's start-up (~1 s) may tick a second in every try:
            # then the same but for the durations (byte for byte at a fixed clock: tests/unit).
            assert lean.stdout == full.stdout or _timeless(lean.stdout) == _timeless(full.stdout)
        lean, _ = both(engine, "ps", "-a", "--no-trunc")
        assert "lean-ps-a" in lean.stdout and "Exited (3)" in lean.stdout
        engine.skiff("create", "--name", "lean-ps-l", "--link", "lean-ps-a:alias", "busybox", "true", check=True)
        made.append("lean-ps-l")
        lean, full = both(engine, "ps", "-a", "--no-trunc")
        assert lean.returncode == 0 and "lean-ps-l/alias" in lean.stdout
    finally:
        engine.skiff("rm", "-f", *made, check=False)


def test_rm_of_many_reports_each_failure(engine: Engine) -> None:
    """Removed at once; each name printed in order, each failure for its own name, exit 1;
    the same from the lean path and from the full CLI."""
    env = dict(os.environ, SKIFF_HOST=engine.host)
    engine.skiff("run", "-d", "--name", "lean-rm-up", "busybox", "sleep", "60", check=True)
    made = ["lean-rm-up"]
    try:
        for which, argv in (("lean", [str(LAUNCHER)]), ("full", [sys.executable, "-m", "skiff.cli.main"])):
            names = [f"lean-rm-{which}-{i}" for i in range(3)]
            for n in names:
                engine.skiff("create", "--name", n, "busybox", "true", check=True)
            made += names
            args = ["rm", names[0], "lean-rm-nosuch", names[1], "lean-rm-up", names[2]]
            r = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=120)
            assert r.returncode == 1, which
            assert r.stdout == "".join(f"{n}\n" for n in names), which
            err = r.stderr.splitlines()
            assert len(err) == 2, r.stderr
            assert err[0] == "Error response from daemon: No such container: lean-rm-nosuch"
            assert err[1].startswith("Error response from daemon: You cannot remove a running container")
            left = engine.skiff("ps", "-a", "--no-trunc", check=True).stdout
            assert "lean-rm-up" in left and not [n for n in names if n in left], which
    finally:
        engine.skiff("rm", "-f", *made, check=False)


@pytest.mark.parametrize("cli", ["lean", "full"])
def test_run_rm_returns_with_the_container_gone(engine: Engine, cli: str) -> None:
    """When `run --rm` returns: all the output was written, the exit code is the container's,
    `ps -a` no longer shows it and its name is free; its bundle, cgroup and log follow soon."""
    env = dict(os.environ, SKIFF_HOST=engine.host)
    argv = [str(LAUNCHER)] if cli == "lean" else [sys.executable, "-m", "skiff.cli.main"]
    bundles = engine.exec_root / "containers"
    before = set(os.listdir(bundles)) if bundles.is_dir() else set()
    name = f"rm-once-{cli}"
    script = "seq 1 3000; echo bye >&2; exit 7"
    r = subprocess.run([*argv, "run", "--rm", "--name", name, "busybox", "sh", "-c", script],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 7, r.stderr
    assert r.stdout.split() == [str(i) for i in range(1, 3001)] and r.stderr == "bye\n"
    assert name not in engine.skiff("ps", "-a", check=True).stdout.split()
    again = subprocess.run([*argv, "run", "--rm", "--name", name, "busybox", "true"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 60
    while set(os.listdir(bundles)) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(os.listdir(bundles)) - before
