"""Docker's security defaults, seen from inside a container started with ``skiff run``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities
NONE = "0000000000000000"


def status(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_root_gets_dockers_capabilities_seccomp_and_no_new_privs(skiff) -> None:
    r = skiff("run", "--rm", "busybox", "grep", "-E", "^(Cap|NoNewPrivs|Seccomp)", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    st = status(r.stdout)
    assert (st["CapEff"], st["CapPrm"], st["CapBnd"], st["CapInh"], st["CapAmb"]) == (ROOT_CAPS,) * 3 + (NONE,) * 2
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("1", "2")


def test_non_root_user_has_an_empty_effective_set(skiff) -> None:
    r = skiff("run", "--rm", "-u", "nobody", "busybox", "grep", "^Cap", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    st = status(r.stdout)
    assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (NONE, NONE, ROOT_CAPS)


def test_the_kernel_stays_out_of_reach(skiff) -> None:
    script = """
        echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c)
        echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable
        touch /proc/sys/kernel/hostname 2>/dev/null && echo sysctl-writable
        mkdir -p /mnt; mount -t tmpfs x /mnt 2>/dev/null || echo mount-refused
        unshare -n true 2>/dev/null || echo unshare-refused
        dd if=/dev/zero of=/tmp/x bs=1k count=10 2>/dev/null && chown nobody /tmp/x && echo files-ok
    """
    r = skiff("run", "--rm", "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["kcore=0", "mount-refused", "unshare-refused", "files-ok"], r.stdout


def _pids_cgroup(cid: str) -> Path:
    found = list(Path("/sys/fs/cgroup/pids").glob(f"*/{cid}")) or list(Path("/sys/fs/cgroup").glob(f"*/{cid}"))
    assert found, f"no pids cgroup for {cid}"
    return found[0]


def test_a_fork_bomb_stops_at_its_pids_limit(skiff) -> None:
    """The bomb fills its pids limit and no more; the host and a neighbour stay responsive; rm -f ends it."""
    other = skiff("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    # A background subshell forks long-lived processes as fast as it can until a fork fails. PID 1
    # forks only that subshell, before the limit (ash exits when a fork fails, and the container
    # would end with it), then execs sleep, which reaps nothing: every pid stays counted. (The
    # classic `f | f &` bomb is made of short-lived processes: reaped as they go, it can die out
    # below the limit, which made this test depend on timing.)
    bomb = skiff("run", "-d", "--pids-limit", "40", "busybox", "sh", "-c",
                 "(while :; do sleep 300 & done) 2>/dev/null & exec sleep 300", check=True).stdout.strip()
    try:
        cg = _pids_cgroup(bomb)
        current = cg / "pids.current"
        deadline, peak = time.monotonic() + 60, 0
        while peak < 40:  # the bomb reaches its limit
            assert time.monotonic() < deadline, f"the bomb never reached its limit (peak {peak})"
            peak = max(peak, int(current.read_text()))
            time.sleep(0.05)
        for _ in range(3):  # while it presses against the limit
            assert int(current.read_text()) <= 40
            r = skiff("exec", other, "sh", "-c", "echo alive", timeout=120)
            assert (r.returncode, r.stdout) == (0, "alive\n"), r.stderr
            assert subprocess.run(["true"], timeout=60).returncode == 0  # the host can still fork
        events = cg / "pids.events"
        if events.exists():  # v1 and v2 both count the refused forks
            assert int(events.read_text().split()[1]) > 0
    finally:
        skiff("rm", "-f", bomb, other, timeout=120)
    assert bomb not in skiff("ps", "-aq", "--no-trunc").stdout


def test_the_exec_helper_cannot_be_opened_through_proc_exe(skiff) -> None:
    """CVE-2019-5736: while execs come in, a container process scanning /proc/<pid>/exe only ever
    opens the container's own binaries (the helper that enters the container is non-dumpable)."""
    probe = """
        end=$(( $(date +%s) + 60 ))
        while [ ! -e /tmp/stop ] && [ $(date +%s) -lt $end ]; do
          for p in /proc/[0-9]*; do
            [ "$p" = /proc/$$ ] || [ "$p" = /proc/1 ] && continue
            t=$(readlink $p/exe 2>/dev/null) || continue
            if head -c 1 $p/exe >/dev/null 2>&1; then echo "open:$t" >> /tmp/seen; fi
          done
        done
        sort -u /tmp/seen > /tmp/result; touch /tmp/done; exec sleep 300
    """
    cid = skiff("run", "-d", "busybox", "sh", "-c", probe, check=True).stdout.strip()
    try:
        for _ in range(15):  # each exec's helper enters the container's namespaces
            r = skiff("exec", cid, "sh", "-c", "exec sleep 0.1")
            assert r.returncode == 0, r.stderr
        skiff("exec", cid, "touch", "/tmp/stop", check=True)
        deadline = time.monotonic() + 60
        while skiff("exec", cid, "test", "-e", "/tmp/done").returncode != 0:
            assert time.monotonic() < deadline, "the probe did not finish"
            time.sleep(0.2)
        seen = set(skiff("exec", cid, "cat", "/tmp/result", check=True).stdout.split())
        assert "open:/bin/busybox" in seen, seen  # the probe did open the container's own processes
        assert seen == {"open:/bin/busybox"}, seen
    finally:
        skiff("rm", "-f", cid)
