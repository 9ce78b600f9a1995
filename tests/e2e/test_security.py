"""Docker's security defaults, seen from inside a container started with ``skiff run``."""

from __future__ import annotations

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
