"""Kernel-tier fixtures: real namespaces, cgroups and overlayfs; root only.

Each test gets its own exec root and cgroup parent (``skiff-test-<pid>``),
and teardown checks that nothing is left behind: no container, no mount that
mentions the test's directories, no cgroup directory, no child process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.common import reaper
from skiff.execsvc import slots
from skiff.execsvc.cgroups import CgroupV1, CgroupV2, detect
from skiff.execsvc.runtime import Runtime
from skiff.execsvc.spec import RootfsMount

REPO = Path(__file__).resolve().parents[2]
SHIM_DIR = REPO / "services" / "execsvc" / "shim"
CGROUP_PARENT = f"skiff-test-{os.getpid()}"


def _overlay_supported() -> bool:
    return "overlay" in Path("/proc/filesystems").read_text()


@pytest.fixture(scope="session")
def kernel_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root (namespaces, mounts, cgroups)")
    if not _overlay_supported():
        pytest.skip("overlayfs is not available in this kernel")
    if not Path("/bin/busybox").exists():
        pytest.skip("/bin/busybox is missing (apt-get install busybox-static)")
    reaper.become_subreaper()


@pytest.fixture(scope="session")
def shim(kernel_ready: None) -> Path:
    if shutil.which("gcc") is None and not (SHIM_DIR / "skiff-shim").exists():
        pytest.skip("gcc is needed to build skiff-shim")
    subprocess.run(["make", "-s", "-C", str(SHIM_DIR), "skiff-shim"], check=True)
    return SHIM_DIR / "skiff-shim"


@pytest.fixture(scope="session")
def busybox_lower(kernel_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("image")
    tar = d / "busybox.tar"
    subprocess.run([str(REPO / "deploy" / "mkimage-busybox.sh"), str(tar)], check=True, capture_output=True)
    lower = d / "lower"
    lower.mkdir()
    with tarfile.open(tar) as t:
        t.extractall(lower, filter="tar")
    # A file that exists but may not be executed: for the COMMAND_NOT_EXECUTABLE case.
    (lower / "bin" / "notexec").write_text("#!/bin/sh\necho no\n")
    (lower / "bin" / "notexec").chmod(0o644)
    return lower


@pytest.fixture
def make_rootfs(busybox_lower: Path, tmp_path: Path) -> Callable[[], tuple[RootfsMount, Path]]:
    """A fresh overlay (busybox lower, private upper) per call; returns (mount, upperdir)."""
    counter = iter(range(1000))

    def make() -> tuple[RootfsMount, Path]:
        n = next(counter)
        upper, work = tmp_path / f"upper{n}", tmp_path / f"work{n}"
        upper.mkdir()
        work.mkdir()
        opts = (f"lowerdir={busybox_lower}", f"upperdir={upper}", f"workdir={work}")
        return RootfsMount("overlay", "overlay", opts), upper

    return make


def _children() -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # a thread (e.g. a gRPC worker) ended while we looked
    return out


def _cgroup_dirs(cg: CgroupV1 | CgroupV2) -> list[Path]:
    roots = [cg.root] if isinstance(cg, CgroupV2) else list(set(cg.mounts.values()))
    return [r / CGROUP_PARENT for r in roots if (r / CGROUP_PARENT).exists()]


@pytest.fixture(params=["c-init", "python-init", "warm-slot"])
def runtime(request: pytest.FixtureRequest, shim: Path, tmp_path: Path) -> Iterator[Runtime]:
    """Each test runs three times: with the shim's init in C where the container allows it (the
    default), with init.py forced (``$SKIFF_INIT=python``), so neither falls behind, and with
    warm slots (slots.py: the first start of the test comes from a slot made beforehand)."""
    before = set(_children())  # e.g. a session-wide skiffd of the e2e tier
    cg = detect(CGROUP_PARENT)
    rt = Runtime(tmp_path / "exec", shim, cgroups=cg)
    rt.force_python_init = request.param == "python-init"
    pool = None
    if request.param == "warm-slot":
        reason = slots.unsupported(cg)
        if reason is not None:
            pytest.skip(f"warm slots: {reason}")
        pool = slots.SlotPool(cg, shim, size=1)
        pool.start()
        assert pool.wait_ready(1, 20), "no warm slot made"
        rt.slots = pool
    yield rt
    for cid in Runtime(tmp_path / "exec", shim, cgroups=cg).list():
        rt.delete(cid, force=True)
    if pool is not None:
        pool.close()
    cg.remove_parent_if_empty()
    deadline = time.monotonic() + 5
    while True:
        reaper.reap()
        if not set(_children()) - before or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert sorted(set(_children()) - before) == [], "processes left behind"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "mounts left behind"
    assert _cgroup_dirs(cg) == [], "cgroup directories left behind"  # type: ignore[arg-type]
