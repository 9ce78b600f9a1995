"""Conformance suite every LayerStore driver must pass; mounts the returned Mount for real."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from skiff.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from skiff.graphsvc.layers import LayerStore, Mount, OverlayDriver, VfsDriver

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting and whiteouts need root"),
]


def overlay_supported() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


DRIVERS = {
    "overlay": pytest.param(
        OverlayDriver,
        marks=pytest.mark.skipif(not overlay_supported(), reason="overlayfs not available"),
        id="overlay",
    ),
    "vfs": pytest.param(VfsDriver, id="vfs"),
}


@pytest.fixture(params=list(DRIVERS.values()))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> LayerStore:
    cls = request.param
    return cls(tmp_path / "graph")  # type: ignore[no-any-return]


def tar_of(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """entries: (kind, name, data-or-linkname) with kind in file/dir/sym."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for kind, name, payload in entries:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(payload)
                tf.addfile(ti)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


BASE = tar_of([
    ("dir", "etc", b""),
    ("file", "etc/motd", b"base motd"),
    ("file", "etc/keep", b"kept"),
    ("dir", "opt", b""),
    ("file", "opt/old", b"hidden by opaque"),
    ("file", "replaced", b"v1"),
    ("sym", "link", "/etc/keep"),
])
TOP = tar_of([
    ("dir", "etc", b""),
    ("file", "etc/.wh.motd", b""),
    ("dir", "opt", b""),
    ("file", "opt/.wh..wh..opq", b""),
    ("file", "opt/new", b"from top"),
    ("file", "replaced", b"v2"),
])


@contextmanager
def mounted(m: Mount, target: Path) -> Iterator[Path]:
    """What the runtime does with a Mount description."""
    target.mkdir()
    if m.type == "bind":
        cmd = ["mount", "-o", ",".join(m.options), m.source, str(target)]
    else:
        cmd = ["mount", "-t", m.type, "-o", ",".join(m.options), m.source, str(target)]
    subprocess.run(cmd, check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_two_layer_chain_mounts_with_whiteouts(driver: LayerStore, tmp_path: Path) -> None:
    base = driver.create_layer_from_archive(io.BytesIO(BASE))
    top = driver.create_layer_from_archive(io.BytesIO(TOP))
    assert base.id != top.id and driver.exists(base.id) and driver.exists(top.id)
    m = driver.prepare("c1", [top.id, base.id])
    with mounted(m, tmp_path / "mnt") as root:
        assert (root / "etc/keep").read_bytes() == b"kept"
        assert not (root / "etc/motd").exists(), "whiteout hides the lower file"
        assert sorted(p.name for p in (root / "opt").iterdir()) == ["new"], "opaque dir hides lower content"
        assert (root / "replaced").read_bytes() == b"v2"
        assert os.readlink(root / "link") == "/etc/keep"
        (root / "etc/written").write_bytes(b"by container")
        (root / "replaced").unlink()
    # Writes go to the container's own layer, never into a shared layer.
    for lid in (base.id, top.id):
        assert not (driver.diff_path(lid) / "etc/written").exists()
    assert (driver.diff_path(base.id) / "replaced").read_bytes() == b"v1"
    assert (driver.diff_path(top.id) / "replaced").read_bytes() == b"v2"
    # Remount: the container layer persists until release.
    with mounted(m, tmp_path / "mnt2") as root:
        assert (root / "etc/written").read_bytes() == b"by container"
        assert not (root / "replaced").exists()
    driver.release("c1")
    driver.release("c1")  # idempotent


def test_single_layer_image(driver: LayerStore, tmp_path: Path) -> None:
    base = driver.create_layer_from_archive(io.BytesIO(BASE))
    m = driver.prepare("solo", [base.id])
    with mounted(m, tmp_path / "mnt") as root:
        assert (root / "etc/motd").read_bytes() == b"base motd"
    driver.release("solo")


def test_containers_are_isolated(driver: LayerStore, tmp_path: Path) -> None:
    base = driver.create_layer_from_archive(io.BytesIO(BASE))
    a, b = driver.prepare("a", [base.id]), driver.prepare("b", [base.id])
    with mounted(a, tmp_path / "ma") as ra:
        (ra / "only-a").write_text("a")
    with mounted(b, tmp_path / "mb") as rb:
        assert not (rb / "only-a").exists()
    driver.release("a")
    driver.release("b")


def test_create_is_idempotent_and_size(driver: LayerStore) -> None:
    one = driver.create_layer_from_archive(io.BytesIO(BASE))
    two = driver.create_layer_from_archive(io.BytesIO(BASE))
    assert one == two == driver.get(one.id)
    assert one.size == len(b"base motd") + len(b"kept") + len(b"hidden by opaque") + len(b"v1")


def test_lifecycle_errors(driver: LayerStore) -> None:
    base = driver.create_layer_from_archive(io.BytesIO(BASE))
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound):
        driver.prepare("c", [missing])
    with pytest.raises(InvalidArgument):
        driver.prepare("c", [])
    with pytest.raises(InvalidArgument):
        driver.prepare("../escape", [base.id])
    with pytest.raises(InvalidArgument):
        driver.exists("not-an-id")
    driver.prepare("c", [base.id])
    with pytest.raises(AlreadyExists):
        driver.prepare("c", [base.id])
    with pytest.raises(FailedPrecondition):
        driver.remove(base.id)
    driver.release("c")
    driver.remove(base.id)
    assert not driver.exists(base.id)
    with pytest.raises(NotFound):
        driver.remove(base.id)
    with pytest.raises(NotFound):
        driver.diff_path(base.id)
