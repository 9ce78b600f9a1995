"""pause/unpause, top, stats, update, restart, rename, port and the run limits/security
flags, through skiffd and the CLI."""

from __future__ import annotations

import time
from pathlib import Path


def _cgroup(controller: str, cid: str) -> Path:
    found = list(Path(f"/sys/fs/cgroup/{controller}").glob(f"*/{cid}"))
    assert found, f"no {controller} cgroup for {cid}"
    return found[0]


def test_pause_top_stats_update_restart_rename(skiff) -> None:
    cid = skiff("run", "-d", "--name", "lc1", "--cpus", "0.5", "-m", "64m", "busybox",
                "sh", "-c", "while true; do date +%s%N >> /tmp/n; sleep 0.05; done", check=True).stdout.strip()
    try:
        if Path("/sys/fs/cgroup/cpu").is_dir():
            assert (_cgroup("cpu", cid) / "cpu.cfs_quota_us").read_text().strip() == "50000"
        skiff("pause", "lc1", check=True)
        assert "Paused" in skiff("ps", check=True).stdout
        assert skiff("inspect", "-f", "{{.State.Status}}", "lc1").stdout.strip() in ("paused", "")
        err = skiff("pause", "lc1")
        assert err.returncode == 1 and "is already paused" in err.stderr
        skiff("unpause", "lc1", check=True)
        err = skiff("unpause", "lc1")
        assert err.returncode == 1 and "is not paused" in err.stderr

        top = skiff("top", "lc1", check=True).stdout.splitlines()
        assert top[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert any("sh -c while true" in line for line in top[1:])

        stats = skiff("stats", "--no-stream", "lc1", check=True).stdout.splitlines()
        assert stats[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
        row = stats[1]
        assert row.startswith(cid[:12]) and "lc1" in row and "/ 64MiB" in row

        skiff("update", "-m", "128m", "--pids-limit", "77", "lc1", check=True)
        if Path("/sys/fs/cgroup/memory").is_dir():
            assert (_cgroup("memory", cid) / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
            assert (_cgroup("pids", cid) / "pids.max").read_text().strip() == "77"

        skiff("rename", "lc1", "lc2", check=True)
        assert skiff("inspect", "-f", "{{.Name}}", cid).stdout.strip() in ("/lc2", "lc2")
        before = skiff("inspect", "-f", "{{.State.Pid}}", "lc2").stdout.strip()
        skiff("restart", "-t", "0", "lc2", check=True)
        after = skiff("inspect", "-f", "{{.State.Pid}}", "lc2").stdout.strip()
        assert "Up" in skiff("ps", check=True).stdout and before != after
    finally:
        skiff("rm", "-f", cid)


def test_port_lists_published_ports(skiff) -> None:
    cid = skiff("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", "30", check=True).stdout.strip()
    try:
        out = skiff("port", cid, check=True).stdout.strip()
        assert out.startswith("80/tcp -> 127.0.0.1:"), out
        assert skiff("port", cid, "80").stdout.strip().startswith("127.0.0.1:")
        r = skiff("port", cid, "81")
        assert r.returncode == 1 and "No public port '81/tcp' published" in r.stderr
    finally:
        skiff("rm", "-f", cid)


def test_security_flags_from_inside(skiff) -> None:
    def run(*args: str) -> str:
        r = skiff("run", "--rm", *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "CapEff:\t0000000000000000" in run("--cap-drop", "ALL", "busybox", "grep", "CapEff", "/proc/self/status")
    eff = run("--cap-add", "SYS_ADMIN", "busybox", "grep", "CapEff", "/proc/self/status").split()[1]
    assert int(eff, 16) & (1 << 21)
    out = run("--privileged", "busybox", "grep", "-E", "^(CapEff|Seccomp):", "/proc/self/status")
    assert "Seccomp:\t0" in out and int(out.split()[1], 16) > 0xA80425FB
    out = run("--read-only", "--tmpfs", "/tmp", "busybox", "sh", "-c",
              "touch /x 2>/dev/null || echo ro; touch /tmp/y && echo tmp-ok")
    assert out.split() == ["ro", "tmp-ok"]
    assert run("--ulimit", "nofile=100:200", "busybox", "sh", "-c", "ulimit -n").strip() == "100"
    assert run("--sysctl", "net.ipv4.ip_forward=1", "busybox", "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    r = skiff("run", "--rm", "--sysctl", "kernel.panic=1", "busybox", "true")
    assert r.returncode == 125 and "sysctl 'kernel.panic' is not allowed" in r.stderr
    r = skiff("run", "--rm", "--ulimit", "nofile=10:100000000", "busybox", "true")
    assert r.returncode == 125 and "hard limit" in r.stderr
    assert "NoNewPrivs:\t0" in run("--security-opt", "no-new-privileges=false", "busybox",
                                   "grep", "NoNewPrivs", "/proc/self/status")


def test_stop_signal_and_stop_timeout(skiff) -> None:
    """--stop-signal is what `stop` sends; a `kill` with it is a manual stop (no restart follows)."""
    trap = "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done"
    cid = skiff("run", "-d", "--stop-signal", "SIGUSR1", "--stop-timeout", "30", "busybox", "sh", "-c", trap,
                check=True).stdout.strip()
    again = skiff("run", "-d", "--restart", "always", "--stop-signal", "USR1", "busybox", "sh", "-c", trap,
                  check=True).stdout.strip()
    try:
        assert skiff("inspect", "-f", "{{.Config.StopSignal}} {{.Config.StopTimeout}}", cid).stdout.split() == [
            "SIGUSR1", "30"]
        for c in (cid, again):
            deadline = time.monotonic() + 30
            while "ready" not in skiff("logs", c).stdout:  # the trap is set
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert skiff("stop", cid, check=True).stdout.strip() == cid
        assert skiff("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "3"
        assert "got-usr1" in skiff("logs", cid).stdout
        skiff("kill", "-s", "USR1", again, check=True)
        assert skiff("wait", again, timeout=60).stdout.strip() == "3"
        time.sleep(1.5)  # a restart would have begun by now (the first back-off is 100 ms)
        state = skiff("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", again).stdout.split()
        assert state == ["exited", "0"], state
        r = skiff("run", "-d", "--stop-signal", "NOPE", "busybox", "true")
        assert r.returncode == 125 and "invalid signal" in r.stderr, r.stderr
    finally:
        skiff("rm", "-f", cid, again)
