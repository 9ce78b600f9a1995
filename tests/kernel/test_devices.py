"""The cgroup v2 device program, attached for real to a group on the cgroup2 mount.

This host is cgroup v1 with an empty cgroup2 hierarchy at /sys/fs/cgroup/unified: a
process in a v2 group there is also held to that group's BPF device program.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.execsvc import devices

UNIFIED = Path("/sys/fs/cgroup/unified")


def _cgroup2(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) and line.split()[2] == "cgroup2" for line in f)


@pytest.fixture
def group(kernel_ready: None) -> Iterator[Path]:
    root = UNIFIED if _cgroup2(UNIFIED) else Path("/sys/fs/cgroup")
    if not _cgroup2(root):
        pytest.skip("no cgroup2 hierarchy mounted")
    g = root / f"skiff-devtest-{uuid.uuid4().hex[:8]}"
    g.mkdir()
    try:
        yield g
    finally:
        g.rmdir()  # the probe processes have exited: the group is empty


def _probe(group: Path, tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """A shell in ``group`` (it moves itself in before doing anything else)."""
    return subprocess.run(["sh", "-c", f"echo $$ > {group}/cgroup.procs && {script}"], capture_output=True,
                          text=True, timeout=30, cwd=tmp_path)


def test_default_rules_enforced_by_the_kernel(group: Path, tmp_path: Path) -> None:
    os.mknod(tmp_path / "loop0", 0o600 | 0o060000, os.makedev(7, 0))
    before = _probe(group, tmp_path, "head -c 0 loop0 && echo opened")
    assert "Operation not permitted" not in before.stderr  # no program yet: only file modes count
    devices.apply_v2(group, devices.default_rules())
    r = _probe(group, tmp_path, "head -c 0 loop0 && echo opened; head -c 3 /dev/zero | wc -c; "
                                "echo x > /dev/null && echo null-ok; mknod ok-node c 1 3 && echo mknod-ok")
    assert "opened" not in r.stdout and "Operation not permitted" in r.stderr, r
    assert r.stdout.split() == ["3", "null-ok", "mknod-ok"], r


def test_access_bits_and_replacement(group: Path, tmp_path: Path) -> None:
    devices.apply_v2(group, [devices.rule(False, "a", None, None, "rwm"), devices.rule(True, "c", 1, 3, "r")])
    r = _probe(group, tmp_path, "head -c 0 /dev/null && echo read-ok; echo x > /dev/null && echo wrote")
    assert r.stdout.split() == ["read-ok"] and "Operation not permitted" in r.stderr, r
    devices.apply_v2(group, devices.privileged_rules())  # a second attach replaces the first
    r = _probe(group, tmp_path, "echo x > /dev/null && echo wrote")
    assert r.stdout.split() == ["wrote"], r
