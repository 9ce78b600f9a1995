"""`run --init`: skiff-init is PID 1, forwards signals to the command and reaps orphans (seen from inside)."""

from __future__ import annotations

import time

#: Three orphans (their parent shell exits at once) end after 0.1 s; then PID 1 is `sleep`
#: (exec'd) without --init, which never reaps them, or skiff-init with it.
ORPHANS = 'for i in 1 2 3; do sh -c "sleep 0.1 &"; done; exec sleep 60'
COUNT_ZOMBIES = "cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l"


LIVE_SLEEPS = "cat /proc/[0-9]*/stat | awk '$2 == \"(sleep)\" && $3 != \"Z\"' | wc -l"


def _zombies(skiff, cid: str) -> int:
    for _ in range(100):  # until only `sleep 60` is left alive (bounded: 10 s)
        if skiff("exec", cid, "sh", "-c", LIVE_SLEEPS, check=True).stdout.strip() == "1":
            break
        time.sleep(0.1)
    time.sleep(0.3)  # let PID 1 take its SIGCHLDs
    return int(skiff("exec", cid, "sh", "-c", COUNT_ZOMBIES, check=True).stdout.strip())


def test_pid_1_is_skiff_init_mounted_read_only(skiff) -> None:
    out = skiff("run", "--rm", "--init", "busybox", "sh", "-c",
                "tr '\\0' ' ' < /proc/1/cmdline; echo; grep ' /sbin/skiff-init ' /proc/self/mountinfo; "
                "echo x > /sbin/skiff-init || echo refused", check=True).stdout.splitlines()
    assert out[0].startswith("/sbin/skiff-init -- sh -c"), out
    assert " ro," in out[1] or out[1].split()[5].startswith("ro"), out
    assert out[-1] == "refused"
    created = skiff("create", "--init", "busybox", check=True).stdout.strip()
    try:
        assert skiff("inspect", "-f", "{{.HostConfig.Init}}", created).stdout.strip() == "true"
    finally:
        skiff("rm", created, check=True)
    plain = skiff("run", "--rm", "busybox", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo", check=True).stdout
    assert plain.startswith("sh -c")


def test_kill_term_1_reaches_the_command(skiff) -> None:
    # The shell waits for a long sleep; TERM sent to PID 1 from inside must end it.
    r = skiff("run", "--rm", "--init", "busybox", "sh", "-c", "sleep 300 & kill -TERM 1; wait", timeout=120)
    assert r.returncode == 143, r.stderr
    r = skiff("run", "--rm", "--init", "busybox", "sh", "-c", "exit 3")
    assert r.returncode == 3


def test_orphaned_zombies_are_reaped(skiff) -> None:
    with_init = skiff("run", "-d", "--init", "busybox", "sh", "-c", ORPHANS, check=True).stdout.strip()
    without = skiff("run", "-d", "busybox", "sh", "-c", ORPHANS, check=True).stdout.strip()
    try:
        assert _zombies(skiff, with_init) == 0
        assert _zombies(skiff, without) == 3  # the control: a PID 1 that does not reap leaves them
        skiff("stop", "-t", "1", with_init, check=True)
        assert skiff("inspect", "-f", "{{.State.ExitCode}}", with_init).stdout.strip() == "143"
    finally:
        skiff("rm", "-f", with_init, without, check=True)
