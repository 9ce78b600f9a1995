"""Device nodes and fifos in image layers (the OCI layer format allows them; debootstrap's /dev has them).

A node shipped in an image grants nothing by itself: the device cgroup still decides what a container
may open, checked here from inside the container.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.e2e.test_images_more import _load

pytestmark = pytest.mark.e2e


def _image_tar(busybox_tar: Path, out: Path) -> None:
    """busybox's root file system plus /devs with char and block devices and a fifo (not in /dev: the
    runtime mounts a tmpfs there, as Docker)."""
    with tarfile.open(busybox_tar) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)

        def node(name: str, type_: bytes, major: int = 0, minor: int = 0, mode: int = 0o666) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = type_, mode, 1_600_000_000
            info.devmajor, info.devminor = major, minor
            dst.addfile(info)

        node("devs", tarfile.DIRTYPE, mode=0o755)
        node("devs/full", tarfile.CHRTYPE, 1, 7)
        node("devs/null", tarfile.CHRTYPE, 1, 3)
        node("devs/loop0", tarfile.BLKTYPE, 7, 0, mode=0o660)
        node("devs/fifo", tarfile.FIFOTYPE, mode=0o644)


def _kinds(tar: Path, prefix: str) -> dict[str, tuple[str, int, int]]:
    out = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name.startswith(prefix):
                kind = "c" if m.ischr() else "b" if m.isblk() else "p" if m.isfifo() else m.type.decode()
                out[name] = (kind, m.devmajor, m.devminor)
    return out


def test_device_nodes_import_run_commit_export_save(engine, skiff, busybox_tar: Path, tmp_path: Path) -> None:
    src = tmp_path / "devs.tar"
    _image_tar(busybox_tar, src)
    image = "devnodes:1"
    name = "devnodes-c"
    try:
        skiff("import", str(src), image, check=True, timeout=120)
        r = skiff("run", "--name", name, image, "sh", "-c",
                  "ls -l /devs; test -p /devs/fifo && echo fifo-ok; echo x > /devs/null && echo null-ok; "
                  "echo x > /devs/full; head -c 0 /devs/loop0 && echo loop-opened; "
                  "mknod /made b 7 1 && mkfifo /made-fifo && echo made", timeout=120)
        out, err = r.stdout, r.stderr
        assert "fifo-ok" in out and "null-ok" in out and "made" in out.split(), (out, err)
        assert "No space left on device" in err, err  # /devs/full is /dev/full: allowed, and full
        # The block device shipped in the image is there, but the device cgroup denies opening it.
        assert "loop-opened" not in out and "Operation not permitted" in err, (out, err)
        lines = {line.split()[-1]: line for line in out.splitlines() if line.startswith(("b", "c", "p"))}
        assert lines["loop0"].startswith("brw-rw----") and "7," in lines["loop0"], out
        assert lines["full"].startswith("crw-rw-rw-") and "1," in lines["full"], out

        diff = skiff("diff", name, check=True).stdout.splitlines()
        assert "A /made" in diff and "A /made-fifo" in diff, diff

        exported = tmp_path / "export.tar"
        skiff("export", "-o", str(exported), name, check=True, timeout=120)
        kinds = _kinds(exported, "devs/")
        assert kinds["devs/full"] == ("c", 1, 7) and kinds["devs/null"] == ("c", 1, 3), kinds
        assert kinds["devs/loop0"] == ("b", 7, 0) and kinds["devs/fifo"][0] == "p", kinds
        assert _kinds(exported, "made")["made"] == ("b", 7, 1)

        skiff("commit", name, "devnodes:2", check=True, timeout=120)
        r2 = skiff("run", "--rm", "devnodes:2", "sh", "-c",
                   "test -b /made && test -p /made-fifo && test -c /devs/null && echo carried; "
                   "head -c 0 /made && echo made-opened", timeout=120)
        assert "carried" in r2.stdout and "made-opened" not in r2.stdout, r2
        assert "Operation not permitted" in r2.stderr, r2

        saved = tmp_path / "saved.tar"
        skiff("save", "-o", str(saved), "devnodes:2", check=True, timeout=120)
        layers = []
        with tarfile.open(saved) as tf:
            for m in tf:
                if m.isreg() and m.name.startswith("blobs/sha256/") and m.size > 512:
                    data = tf.extractfile(m)
                    assert data is not None
                    path = tmp_path / os.path.basename(m.name)
                    path.write_bytes(data.read())
                    if tarfile.is_tarfile(path):
                        layers.append(path)
        seen = {}
        for layer in layers:
            seen.update(_kinds(layer, "devs/"))
            seen.update(_kinds(layer, "made"))
        assert seen.get("devs/loop0") == ("b", 7, 0) and seen.get("made") == ("b", 7, 1), seen
        assert seen.get("made-fifo", ("",))[0] == "p", seen
        skiff("rmi", "devnodes:2", check=True)
        loaded = _load(engine, saved)
        assert loaded.returncode == 0, loaded.stderr
        again = skiff("run", "--rm", "devnodes:2", "sh", "-c", "test -b /made && test -c /devs/full && echo ok",
                      timeout=120)
        assert again.stdout.split() == ["ok"], again
    finally:
        skiff("rm", "-f", name)
        skiff("rmi", "devnodes:2")
        skiff("rmi", "devnodes:1")
