"""`skiff --debug`: the engine's own per-phase trace of a command, end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.conftest import VENV_BIN, Engine


def test_debug_run_prints_the_phases_of_every_service(skiff) -> None:
    r = skiff("--debug", "run", "--rm", "--network", "none", "busybox", "echo", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"  # the trace goes to stderr only
    rows = [line.split(None, 3) for line in r.stderr.splitlines() if line[:8].strip().replace(".", "").isdigit()]
    phases = {(row[2], row[3]) for row in rows if len(row) == 4}
    for want in [("apiserver", "CreateContainer"), ("graphsvc", "CreateContainer"), ("apiserver", "prepare rootfs"),
                 ("netsvc", "CreateEndpoint"), ("execsvc", "StartTask"),
                 ("container", "init (set-up, execve)"), ("container", "first output"),
                 ("container", "run (clone to exit)"), ("cli", "command (wall time, after start-up)")]:
        assert want in phases, (want, r.stderr)
    # the shim spawned (a cold start) or a warm slot's standby shim released (execsvc/slots.py)
    assert ("execsvc", "spawn (shim, clone)") in phases or ("execsvc", "release (warm slot)") in phases, r.stderr


def test_trace_file_from_the_environment(engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    r = subprocess.run([str(VENV_BIN / "skiff"), "run", "--rm", "--network", "none", "busybox", "true"],
                       env=dict(os.environ, SKIFF_HOST=engine.host, SKIFF_TRACE=str(out)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    data = json.loads(out.read_text())
    names = {(service, name) for service, name, _start, _dur in data["spans"]}
    assert ("execsvc", "WaitTask") in names or ("execsvc", "StartTask") in names
    assert ("container", "init (set-up, execve)") in names


def test_untraced_run_prints_no_trace(skiff) -> None:
    r = skiff("run", "--rm", "--network", "none", "busybox", "true")
    assert r.returncode == 0 and "trace" not in r.stderr
