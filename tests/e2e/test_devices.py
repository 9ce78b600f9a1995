"""The device cgroup allow-list, checked from inside containers (cgroup v1 here: devices.allow/deny)."""

from __future__ import annotations

import os

import pytest

#: mknod is allowed (Docker's "c *:* m", "b *:* m"); opening a device not on the list is not.
PROBE = ("mknod /tmp/loop0 b 7 0 && echo made; head -c 0 /tmp/loop0 && echo opened; "
         "mknod /tmp/lc c 10 237 && head -c 0 /tmp/lc && echo opened-lc; "
         "head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo null; echo x > /dev/full; "
         "mknod /tmp/mynull c 1 3 && echo y > /tmp/mynull && echo mynull")


def test_default_allow_list(skiff) -> None:
    r = skiff("run", "--rm", "busybox", "sh", "-c", PROBE)
    out, err = r.stdout.split(), r.stderr
    assert "made" in out and "opened" not in out and "opened-lc" not in out, (out, err)
    assert err.count("Operation not permitted") == 2, err
    assert "4" in out and "null" in out and "mynull" in out  # the standard devices work
    assert "No space left on device" in err  # /dev/full is allowed (and full)


def test_exec_is_held_to_the_same_list(skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        r = skiff("exec", cid, "sh", "-c", "mknod /tmp/l b 7 0; head -c 0 /tmp/l && echo opened")
        assert "opened" not in r.stdout and "Operation not permitted" in r.stderr, r
    finally:
        skiff("rm", "-f", cid)


def test_privileged_allows_every_device(skiff) -> None:
    r = skiff("run", "--rm", "--privileged", "busybox", "sh", "-c",
              "mknod /tmp/lc c 10 237 && head -c 0 /tmp/lc && echo opened-lc")
    assert "opened-lc" in r.stdout and "Operation not permitted" not in r.stderr, r


@pytest.mark.skipif(not os.path.exists("/dev/loop-control"), reason="needs /dev/loop-control on the host")
def test_device_flag_adds_the_node_and_its_permissions(skiff) -> None:
    r = skiff("run", "--rm", "--device", "/dev/loop-control:/dev/lc:r", "busybox", "sh", "-c",
              "ls -l /dev/lc; head -c 0 /dev/lc && echo read-ok; echo x > /dev/lc && echo wrote")
    assert r.stdout.startswith("crw") and "10, 237" in r.stdout, r
    assert "read-ok" in r.stdout and "wrote" not in r.stdout and "Operation not permitted" in r.stderr, r
    r = skiff("run", "--rm", "--device", "/dev/loop-control", "busybox", "sh", "-c",
              "head -c 0 /dev/loop-control && echo read-ok")
    assert "read-ok" in r.stdout, r


@pytest.mark.parametrize("spec,message", [
    ("/no/such/device", "error gathering device information while adding custom device"),
    ("/etc/passwd", "not a device node"),
    ("/dev/null:/dev/x:rwx", "bad mode specified: rwx"),
    ("/dev/null:dev/x", "is not an absolute path"),
])
def test_bad_devices_are_refused(skiff, spec: str, message: str) -> None:
    r = skiff("run", "--rm", "--device", spec, "busybox", "true")
    assert r.returncode != 0 and message in r.stderr, r.stderr
