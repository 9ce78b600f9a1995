"""Docker's security defaults, asserted from inside a busybox container: capabilities,
no_new_privs, seccomp, masked and read-only /proc paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.execsvc import logs
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.security import DEFAULT_CAPS, cap_mask
from skiff.execsvc.spec import ContainerSpec, RootfsMount

pytestmark = pytest.mark.kernel

MakeRootfs = Callable[[], tuple[RootfsMount, Path]]
DOCKER_CAPS = f"{cap_mask(DEFAULT_CAPS):016x}"  # 00000000a80425fb


def run(rt: Runtime, make_rootfs: MakeRootfs, script: str, cid: str = "sec", **kw: object) -> tuple[int, str, str]:
    rootfs, _ = make_rootfs()
    rt.create(ContainerSpec(id=cid, args=("sh", "-c", script), rootfs=rootfs, **kw))  # type: ignore[arg-type]
    rt.start(cid)
    code = rt.wait(cid, timeout=20)
    entries = list(logs.read(rt.log_path(cid)))
    out = b"".join(e.data for e in entries if e.stream == "stdout").decode()
    err = b"".join(e.data for e in entries if e.stream == "stderr").decode()
    rt.delete(cid)
    return code, out, err


def status(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_root_has_exactly_dockers_capabilities(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")
    assert code == 0, err
    st = status(out)
    assert DOCKER_CAPS == "00000000a80425fb"
    assert (st["CapEff"], st["CapPrm"], st["CapBnd"]) == (DOCKER_CAPS,) * 3
    assert (st["CapInh"], st["CapAmb"]) == ("0" * 16,) * 2
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("1", "2")


def test_non_root_user_has_no_effective_capabilities(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    code, out, err = run(runtime, make_rootfs, "id -u; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status",
                         user="nobody")
    assert code == 0, err
    st = status(out)
    assert out.splitlines()[0] == "65534"
    assert (st["CapEff"], st["CapPrm"], st["CapInh"], st["CapAmb"]) == ("0" * 16,) * 4
    assert st["CapBnd"] == DOCKER_CAPS
    assert (st["NoNewPrivs"], st["Seccomp"]) == ("1", "2")


def test_masked_and_read_only_proc_paths(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = """
        echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c)
        echo keys=$(cat /proc/keys 2>/dev/null | wc -c)
        echo timer_list=$(cat /proc/timer_list 2>/dev/null | wc -c)
        echo acpi=$(ls /proc/acpi 2>/dev/null | wc -l)
        echo firmware=$(ls /sys/firmware 2>/dev/null | wc -l)
        touch /sys/firmware/x 2>/dev/null && echo firmware-writable
        echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable
        echo evil > /proc/sys/kernel/hostname 2>/dev/null && echo sysctl-writable
        echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo drop-caches-writable
        grep -E ' /proc/(sys|sysrq-trigger|irq|bus|fs) ' /proc/mounts | grep -c ' ro,nosuid,nodev,noexec'
        hostname
    """
    code, out, err = run(runtime, make_rootfs, script, hostname="box")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:5] == ["kcore=0", "keys=0", "timer_list=0", "acpi=0", "firmware=0"], out
    assert int(lines[5]) >= 3, out  # /proc/sys and /proc/sysrq-trigger at least; the rest where present
    assert lines[6:] == ["box"], out


def test_privileged_operations_fail(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = """
        mkdir -p /mnt
        mount -t tmpfs x /mnt; echo mount=$?
        umount /proc; echo umount=$?
        unshare -n true; echo unshare-net=$?
        unshare -U true; echo unshare-user=$?
        unshare -m true; echo unshare-mnt=$?
        hostname other; echo sethostname=$?
        mknod /tmp/sda b 8 0 && echo mknod-ok
        ip link add dummy0 type dummy 2>/dev/null; echo iplink=$?
        date -s 2000-01-01 >/dev/null 2>&1; echo year=$(date +%Y)
        insmod /nonexistent.ko 2>/dev/null; echo insmod=$?
    """
    code, out, err = run(runtime, make_rootfs, script)
    assert code == 0, err
    results = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    for op in ("mount", "umount", "unshare-net", "unshare-user", "unshare-mnt", "sethostname", "iplink", "insmod"):
        assert results[op] != "0", (op, out, err)
    assert results["year"] != "2000", out  # settimeofday / clock_settime refused
    assert "mknod-ok" in out  # CAP_MKNOD is one of Docker's defaults
    assert "Operation not permitted" in err


def test_ordinary_things_still_work(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    script = """
        set -e
        ls / >/dev/null
        ps >/dev/null
        sh -c 'echo nested'
        wget --help >/dev/null 2>&1 || [ $? = 1 ]
        dd if=/dev/zero of=/tmp/x bs=1k count=10 2>/dev/null
        chown nobody /tmp/x && stat -c %U /tmp/x
        (sleep 0.1 & wait) && echo background
        set +e
        # A raw ICMP socket needs CAP_NET_RAW; lo is down in a fresh netns, so only the error matters.
        ping -c1 -W1 127.0.0.1 >/dev/null
        su nobody -s /bin/sh -c 'id -u'
    """
    code, out, err = run(runtime, make_rootfs, script)
    assert code == 0, (out, err)  # su's exit status
    assert out.splitlines() == ["nested", "nobody", "background", "65534"], (out, err)
    assert "permission" not in err.lower() and "not permitted" not in err, err


def test_only_stdio_reaches_the_container(runtime: Runtime, make_rootfs: MakeRootfs) -> None:
    # sh is PID 1 (the trailing 'true' keeps it from exec'ing ls); ls looks at its fds.
    code, out, err = run(runtime, make_rootfs, "ls /proc/1/fd; true")
    assert code == 0, err
    assert out.split() == ["0", "1", "2"], out
