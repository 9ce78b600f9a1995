"""Restart policies through skiffd and the CLI: counts, manual stops, rm -f, update --restart,
a gateway killed mid-way, and a whole-daemon restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import VENV_BIN, Engine

#: Each run appends to a file in the container's own writable layer and prints how many runs there were.
COUNTING = "echo run >> /runs; wc -l < /runs"


def _until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what}: not met within {timeout}s"
        time.sleep(0.1)


def _inspect(skiff, cid: str, fmt: str) -> str:
    return str(skiff("inspect", "-f", fmt, cid).stdout.strip())


def _runs(skiff, cid: str) -> list[str]:
    return [line.strip() for line in skiff("logs", cid).stdout.splitlines()]


def test_on_failure_restarts_n_times_then_gives_up(skiff) -> None:
    cid = skiff("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c", f"{COUNTING}; exit 3",
                check=True).stdout.strip()
    try:
        _until(lambda: _runs(skiff, cid) == ["1", "2", "3"] and _inspect(skiff, cid, "{{.State.Status}}") == "exited",
               what="three runs")
        time.sleep(1.5)  # a fourth run would have started by now (back-off 400 ms)
        assert _runs(skiff, cid) == ["1", "2", "3"]
        assert _inspect(skiff, cid, "{{.RestartCount}}") == "2"
        assert _inspect(skiff, cid, "{{.State.ExitCode}}") == "3"
        assert _inspect(skiff, cid, "{{.HostConfig.RestartPolicy.Name}}") == "on-failure"
    finally:
        skiff("rm", "-f", cid, check=True)


def test_on_failure_leaves_a_clean_exit(skiff) -> None:
    cid = skiff("run", "-d", "--restart", "on-failure", "busybox", "sh", "-c", COUNTING, check=True).stdout.strip()
    try:
        assert skiff("wait", cid, timeout=30).stdout.strip() == "0"
        time.sleep(1)
        assert _runs(skiff, cid) == ["1"] and _inspect(skiff, cid, "{{.RestartCount}}") == "0"
    finally:
        skiff("rm", "-f", cid, check=True)


def test_always_until_stopped_then_start_resets_the_count(skiff) -> None:
    # Three short runs, then it stays up (from the third run on).
    script = "echo run >> /runs; n=$(wc -l < /runs); echo $n; [ $n -ge 3 ] && exec sleep 300; sleep 0.2"
    cid = skiff("run", "-d", "--restart", "always", "busybox", "sh", "-c", script, check=True).stdout.strip()
    try:
        _until(lambda: len(_runs(skiff, cid)) >= 3, what="three runs")
        skiff("stop", "-t", "1", cid, check=True)
        settled = _runs(skiff, cid)
        time.sleep(2)
        assert _runs(skiff, cid) == settled, "restarted after a manual stop"
        assert _inspect(skiff, cid, "{{.State.Status}}") == "exited"
        assert int(_inspect(skiff, cid, "{{.RestartCount}}")) >= 2
        skiff("start", cid, check=True)
        assert _inspect(skiff, cid, "{{.RestartCount}}") == "0"
        skiff("kill", cid, check=True)
        time.sleep(1.5)
        assert _inspect(skiff, cid, "{{.State.Status}}") == "exited", "restarted after a kill"
    finally:
        skiff("rm", "-f", cid, check=True)


def test_rm_force_during_the_back_off(skiff) -> None:
    # After a few quick failures the back-off is long enough to catch the container restarting.
    cid = skiff("run", "-d", "--restart", "always", "busybox", "sh", "-c", "exit 1", check=True).stdout.strip()
    _until(lambda: int(_inspect(skiff, cid, "{{.RestartCount}}") or 0) >= 5, what="five restarts")  # 1.6 s apart
    _until(lambda: "Restarting (1)" in skiff("ps", check=True).stdout, what="ps shows Restarting")
    r = skiff("rm", cid)
    assert r.returncode != 0 and "Stop the container before attempting removal" in r.stderr
    skiff("rm", "-f", cid, check=True)
    time.sleep(2)
    assert cid not in skiff("ps", "-aq", "--no-trunc").stdout


def test_update_restart_is_kept_and_acted_on(skiff) -> None:
    cid = skiff("run", "-d", "-m", "64m", "busybox", "sh", "-c", f"{COUNTING}; sleep 1; exit 1",
                check=True).stdout.strip()
    try:
        skiff("update", "--restart", "on-failure:1", "-m", "96m", "--cpus", "0.5", cid, check=True)
        assert _inspect(skiff, cid, "{{.HostConfig.RestartPolicy.Name}}") == "on-failure"
        assert _inspect(skiff, cid, "{{.HostConfig.RestartPolicy.MaximumRetryCount}}") == "1"
        assert _inspect(skiff, cid, "{{.HostConfig.Memory}}") == str(96 << 20)
        assert _inspect(skiff, cid, "{{.HostConfig.NanoCpus}}") == "500000000"
        _until(lambda: _runs(skiff, cid) == ["1", "2"] and _inspect(skiff, cid, "{{.State.Status}}") == "exited",
               what="one restart")
        # The restarted run got the updated limit (the spec is rebuilt from the record).
        mem = list(Path("/sys/fs/cgroup/memory").glob(f"*/{cid}/memory.limit_in_bytes"))
        assert _inspect(skiff, cid, "{{.RestartCount}}") == "1"
        skiff("start", cid, check=True)
        if mem:
            assert mem[0].read_text().strip() == str(96 << 20)
    finally:
        skiff("rm", "-f", cid, check=True)


def test_exit_while_the_gateway_is_dead_is_restarted_once(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "--restart", "on-failure:3", "busybox", "sh", "-c", f"{COUNTING}; sleep 1; exit 2",
                check=True).stdout.strip()
    try:
        for _ in range(2):  # the gateway dies twice while runs end
            os.kill(engine.service_pid("apiserver"), signal.SIGKILL)
            time.sleep(1.5)
        _until(lambda: _inspect(skiff, cid, "{{.State.Status}}") == "exited" and len(_runs(skiff, cid)) == 4,
               what="four runs")
        time.sleep(1.5)
        assert _runs(skiff, cid) == ["1", "2", "3", "4"]
        assert _inspect(skiff, cid, "{{.RestartCount}}") == "3"
    finally:
        skiff("rm", "-f", cid, check=True)


def _daemon(data_root: Path, exec_root: Path, log: Path) -> subprocess.Popen[bytes]:
    host = f"unix://{exec_root}/skiff.sock"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [str(VENV_BIN / "skiffd"), "-D", "--data-root", str(data_root), "--exec-root", str(exec_root), "-H", host],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, SKIFF_BRIDGE=f"skr{os.getpid() % 1000000}",
                     SKIFF_CGROUP_PARENT=f"skiff-e2e-r{os.getpid()}"))
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_always_comes_back_after_a_daemon_restart_unless_stopped_does_not(engine: Engine, tmp_path: Path,
                                                                           busybox_tar: Path) -> None:
    data_root, exec_root, log = tmp_path / "data", tmp_path / "run", tmp_path / "skiffd.log"
    eng = Engine(data_root, exec_root, f"unix://{exec_root}/skiff.sock", _daemon(data_root, exec_root, log), log)
    try:
        _until(lambda: eng.skiff("version").returncode == 0, what="skiffd up")
        eng.skiff("import", str(busybox_tar), "busybox:latest", check=True)
        ids = {}
        for policy in ("always", "unless-stopped", "no"):
            ids[policy] = eng.skiff("run", "-d", "--restart", policy, "busybox", "sleep", "300",
                                    check=True).stdout.strip()
            eng.skiff("stop", "-t", "0", ids[policy], check=True)
        _stop(eng.proc)
        eng.proc = _daemon(data_root, exec_root, log)
        _until(lambda: eng.skiff("version").returncode == 0, what="skiffd up again")
        _until(lambda: _inspect(eng.skiff, ids["always"], "{{.State.Status}}") == "running", what="always back")
        time.sleep(1)
        assert _inspect(eng.skiff, ids["unless-stopped"], "{{.State.Status}}") == "exited"
        assert _inspect(eng.skiff, ids["no"], "{{.State.Status}}") == "exited"
    finally:
        left = eng.skiff("ps", "-aq", "--no-trunc").stdout.split()
        if left:
            eng.skiff("rm", "-f", *left)
        _stop(eng.proc)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_each_service_killed_while_a_container_restarts(engine: Engine, skiff) -> None:
    """Every run is counted once: runs == RestartCount + 1, whichever service dies meanwhile."""
    cid = skiff("run", "-d", "--restart", "on-failure:4", "busybox", "sh", "-c", f"{COUNTING}; sleep 0.5; exit 2",
                check=True).stdout.strip()
    try:
        for name in ("execsvc", "graphsvc", "netsvc", "apiserver"):
            os.kill(engine.service_pid(name), signal.SIGKILL)
            time.sleep(0.8)
        _until(lambda: _inspect(skiff, cid, "{{.RestartCount}}") == "4"
               and _inspect(skiff, cid, "{{.State.Status}}") == "exited", timeout=120, what="four restarts")
        time.sleep(1.5)
        assert _runs(skiff, cid) == ["1", "2", "3", "4", "5"]
    finally:
        skiff("rm", "-f", cid, check=True)
