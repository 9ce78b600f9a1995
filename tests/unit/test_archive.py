"""Safe layer extraction: hostile archives are refused and write nothing outside the destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.common.errors import UNSAFE_ARCHIVE, InvalidArgument
from skiff.graphsvc import archive
from skiff.graphsvc.layers import VfsDriver

ROOT = os.geteuid() == 0


def member(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> tuple:
    return (name, type_, data, kw)


def make_tar(members: list[tuple], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, type_, data, kw0 in members:
            kw = dict(kw0)
            ti = tarfile.TarInfo(name)
            ti.type = type_
            ti.mode = int(kw.pop("mode", 0o644 if type_ != tarfile.DIRTYPE else 0o755))  # type: ignore[call-overload]
            ti.mtime = int(kw.pop("mtime", 1_600_000_000))  # type: ignore[call-overload]
            for k, v in kw.items():
                setattr(ti, k, v)
            if type_ == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw


def snapshot(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A parent dir with a decoy file and an empty destination inside it."""
    (tmp_path / "outside.txt").write_text("decoy")
    dest = tmp_path / "dest"
    dest.mkdir()
    return tmp_path, dest


def assert_rejected(sandbox: tuple[Path, Path], data: bytes, **caps: int) -> InvalidArgument:
    parent, dest = sandbox
    before = snapshot(parent)
    with pytest.raises(InvalidArgument) as ei:
        archive.extract(io.BytesIO(data), dest, **caps)
    assert ei.value.reason == UNSAFE_ARCHIVE
    after = {p for p in snapshot(parent) if not p.startswith("dest/") and p != "dest"}
    assert after == {p for p in before if p != "dest"}, "something was written outside dest"
    assert (parent / "outside.txt").read_text() == "decoy"
    return ei.value


HOSTILE: dict[str, Callable[[], bytes]] = {
    "dotdot": lambda: make_tar([member("../x", data=b"pwn")]),
    "dotdot-nested": lambda: make_tar([member("a/../../x", data=b"pwn")]),
    "absolute": lambda: make_tar([member("/abs", data=b"pwn")]),
    "through-abs-symlink": lambda: make_tar(
        [member("a", tarfile.SYMTYPE, linkname="/etc"), member("a/passwd", data=b"pwn")]
    ),
    "through-relative-symlink": lambda: make_tar(
        [member("d", tarfile.DIRTYPE), member("d/l", tarfile.SYMTYPE, linkname=".."),
         member("d/l/x", data=b"pwn")]
    ),
    "symlink-escape": lambda: make_tar([member("a", tarfile.SYMTYPE, linkname="../../..")]),
    "symlink-escape-then-write": lambda: make_tar(
        [member("a", tarfile.SYMTYPE, linkname="../../.."), member("a/outside.txt", data=b"pwn")]
    ),
    "hardlink-escape": lambda: make_tar([member("h", tarfile.LNKTYPE, linkname="../../etc/passwd")]),
    "hardlink-absolute": lambda: make_tar([member("h", tarfile.LNKTYPE, linkname="/etc/passwd")]),
    "hardlink-not-yet-extracted": lambda: make_tar(
        [member("h", tarfile.LNKTYPE, linkname="later"), member("later", data=b"x")]
    ),
    "whiteout-escape": lambda: make_tar([member(".wh...", data=b"")]),
    "whiteout-parent-escape": lambda: make_tar([member("../.wh.outside.txt", data=b"")]),
    "device-through-symlink": lambda: make_tar(
        [member("d", tarfile.SYMTYPE, linkname="/dev"), member("d/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)]
    ),
    "device-escape": lambda: make_tar([member("../sda", tarfile.BLKTYPE, devmajor=8, devminor=0)]),
    "trusted-xattr": lambda: make_tar(
        [member("f", data=b"x", pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y"})]
    ),
    "security-xattr": lambda: make_tar(
        [member("f", data=b"x", pax_headers={"SCHILY.xattr.security.selinux": "x"})]
    ),
    "not-a-tar": lambda: b"this is not a tar archive at all" * 40,
    "truncated": lambda: make_tar([member("f", data=b"x" * 5000)])[:1024],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_rejected(sandbox: tuple[Path, Path], case: str) -> None:
    err = assert_rejected(sandbox, HOSTILE[case]())
    assert "member" in err.message


def test_error_names_the_member(sandbox: tuple[Path, Path]) -> None:
    err = assert_rejected(sandbox, make_tar([member("ok", data=b"1"), member("../evil", data=b"2")]))
    assert "../evil" in err.message


def test_gzip_bomb_fails_cleanly(sandbox: tuple[Path, Path]) -> None:
    bomb = make_tar([member("zeros", data=b"\0" * (4 << 20))], gz=True)
    assert len(bomb) < 64 << 10
    err = assert_rejected(sandbox, bomb, max_bytes=1 << 20)
    assert "limit" in err.message


def test_too_many_entries(sandbox: tuple[Path, Path]) -> None:
    data = make_tar([member(f"f{i}", data=b"") for i in range(20)])
    err = assert_rejected(sandbox, data, max_entries=10)
    assert "entries" in err.message


def test_extracts_plain_and_gzip_streams_with_metadata(tmp_path: Path) -> None:
    members = [
        member("./", tarfile.DIRTYPE),
        member("./bin", tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000),
        member("./bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000),
        member("./bin/alias", tarfile.SYMTYPE, linkname="tool"),
        member("./bin/abs", tarfile.SYMTYPE, linkname="/etc/passwd"),  # absolute: resolved in the container
        member("./bin/hard", tarfile.LNKTYPE, linkname="./bin/tool"),
        member("./implicit/parent/file", data=b"deep"),
        member("./pipe", tarfile.FIFOTYPE, mode=0o600),
        member("./x", data=b"u", pax_headers={"SCHILY.xattr.user.note": "hi"}),
    ]
    raw = make_tar(members)
    for gz in (False, True):
        dest = tmp_path / f"dest{gz}"
        dest.mkdir()
        stats = archive.extract(io.BytesIO(make_tar(members, gz=True) if gz else raw), dest)
        # The DiffID is the digest of the uncompressed tar, whatever the input compression.
        assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert stats.entries == len(members)
        assert stats.tar_bytes == len(raw)
        tool = dest / "bin/tool"
        assert tool.read_bytes() == b"#!/bin/sh\n"
        st = tool.stat()
        assert stat.S_IMODE(st.st_mode) == 0o4755, "setuid preserved"
        if ROOT:
            assert (st.st_uid, st.st_gid) == (1000, 1000)
        assert st.st_mtime == 1_600_000_000
        assert (dest / "bin").stat().st_mtime == 1_500_000_000, "directory mtime set after its children"
        assert os.readlink(dest / "bin/alias") == "tool"
        assert os.readlink(dest / "bin/abs") == "/etc/passwd"
        assert (dest / "bin/hard").stat().st_ino == st.st_ino
        assert (dest / "implicit/parent/file").read_bytes() == b"deep"
        assert stat.S_ISFIFO((dest / "pipe").lstat().st_mode)
        try:
            assert os.getxattr(dest / "x", "user.note") == b"hi"
        except OSError:  # tmpfs without user xattrs
            pass


def test_path_input(tmp_path: Path) -> None:
    tar = tmp_path / "l.tar"
    tar.write_bytes(make_tar([member("a", data=b"1")]))
    dest = tmp_path / "d"
    dest.mkdir()
    archive.extract(tar, dest)
    assert (dest / "a").read_bytes() == b"1"


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    archive.extract(io.BytesIO(make_tar([
        member("a", tarfile.SYMTYPE, linkname="/etc"),
        member("a", tarfile.DIRTYPE),
        member("a/f", data=b"inside"),
    ])), dest)
    assert (dest / "a").is_dir() and not (dest / "a").is_symlink()
    assert (dest / "a/f").read_bytes() == b"inside"


@pytest.mark.skipif(not ROOT, reason="whiteouts need CAP_MKNOD and trusted.* xattrs need CAP_SYS_ADMIN")
def test_oci_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    archive.extract(io.BytesIO(make_tar([
        member("etc", tarfile.DIRTYPE),
        member("etc/.wh.motd", data=b""),
        member("opt", tarfile.DIRTYPE),
        member("opt/.wh..wh..opq", data=b""),
        member("ready", tarfile.CHRTYPE, devmajor=0, devminor=0),
    ])), dest)
    st = (dest / "etc/motd").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (dest / "etc/.wh.motd").exists()
    assert os.getxattr(dest / "opt", "trusted.overlay.opaque") == b"y"
    assert not (dest / "opt/.wh..wh..opq").exists()
    assert stat.S_ISCHR((dest / "ready").lstat().st_mode)


@pytest.mark.skipif(not ROOT, reason="device nodes need CAP_MKNOD")
def test_device_nodes_and_fifos_extract_as_the_layer_format_allows(tmp_path: Path) -> None:
    """Character/block devices and fifos are part of the OCI layer format (debootstrap's /dev has them)."""
    dest = tmp_path / "d"
    dest.mkdir()
    archive.extract(io.BytesIO(make_tar([
        member("dev", tarfile.DIRTYPE),
        member("dev/full", tarfile.CHRTYPE, devmajor=1, devminor=7, mode=0o666, uid=0, gid=0),
        member("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, gid=6),
        member("dev/fifo", tarfile.FIFOTYPE, mode=0o620),
    ])), dest)
    full = (dest / "dev/full").lstat()
    assert stat.S_ISCHR(full.st_mode) and full.st_rdev == os.makedev(1, 7)
    assert stat.S_IMODE(full.st_mode) == 0o666
    loop = (dest / "dev/loop0").lstat()
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    assert stat.S_IMODE(loop.st_mode) == 0o660 and loop.st_gid == 6
    fifo = (dest / "dev/fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620


@pytest.mark.skipif(not ROOT, reason="device nodes need CAP_MKNOD")
def test_vfs_copies_device_nodes_without_opening_them(tmp_path: Path) -> None:
    store = VfsDriver(tmp_path / "graph")
    layer = store.create_layer_from_archive(io.BytesIO(make_tar([
        member("dev", tarfile.DIRTYPE),
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        member("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
    ])))
    mount = store.prepare("c" * 64, [layer.id])
    try:
        rootfs = Path(mount.source)  # vfs: a bind mount of the copied tree
        null = (rootfs / "dev/null").lstat()
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
        loop = (rootfs / "dev/loop0").lstat()
        assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    finally:
        store.release("c" * 64)


@pytest.mark.parametrize(
    "evil",
    [
        [member("../x", data=b"pwn")],
        [member("a", tarfile.SYMTYPE, linkname="/etc"), member("a/passwd", data=b"pwn")],
        [member("h", tarfile.LNKTYPE, linkname="../../etc/passwd")],
    ],
    ids=["dotdot", "through-symlink", "hardlink-escape"],
)
def test_failed_import_leaves_no_partial_layer(tmp_path: Path, evil: list[tuple]) -> None:
    store = VfsDriver(tmp_path / "graph")
    # Valid members first, so the failure happens mid-extraction.
    bad = make_tar([member("ok", tarfile.DIRTYPE), member("ok/f", data=b"1"), *evil])
    with pytest.raises(InvalidArgument) as ei:
        store.create_layer_from_archive(io.BytesIO(bad))
    assert ei.value.reason == UNSAFE_ARCHIVE
    assert list((tmp_path / "graph/vfs/layers").iterdir()) == []
    assert list((tmp_path / "graph/vfs/tmp").iterdir()) == []


def test_non_seekable_gzip_stream(tmp_path: Path) -> None:
    """Layers arrive over gRPC streams and pipes: nothing may seek."""
    raw = make_tar([member("a", tarfile.DIRTYPE), member("a/b", data=b"x" * 100_000)])
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, gzip.compress(raw)), os.close(w)))
    writer.start()
    dest = tmp_path / "d"
    dest.mkdir()
    with os.fdopen(r, "rb", buffering=0) as stream:
        stats = archive.extract(stream, dest)
    writer.join()
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "a/b").read_bytes() == b"x" * 100_000


def test_zstd_layer_extracts(tmp_path: Path) -> None:
    import zstandard

    raw = make_tar([member("hello", data=b"zstd\n")])
    stats = archive.extract(io.BytesIO(zstandard.ZstdCompressor().compress(raw)), tmp_path)
    assert (tmp_path / "hello").read_bytes() == b"zstd\n"
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_zstd_bomb_fails_cleanly(sandbox: tuple[Path, Path]) -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(make_tar([member("zeros", data=b"\0" * (4 << 20))]))
    assert len(bomb) < 64 << 10
    err = assert_rejected(sandbox, bomb, max_bytes=1 << 20)
    assert "limit" in err.message


def test_truncated_zstd_is_refused(sandbox: tuple[Path, Path]) -> None:
    import zstandard

    data = zstandard.ZstdCompressor().compress(make_tar([member("f", data=os.urandom(4096))]))
    assert_rejected(sandbox, data[: len(data) // 2])


def _gz_members(raw: bytes, cut: int) -> bytes:
    return gzip.compress(raw[:cut]) + gzip.compress(raw[cut:])


def test_gzip_multi_member_and_nul_padding_extract(tmp_path: Path) -> None:
    """gzip streams may hold several members and NUL padding (as gzip(1) and GzipFile accept)."""
    raw = make_tar([member("a", data=b"A" * 70_000), member("b", data=b"B" * 10)])
    for i, blob in enumerate((_gz_members(raw, 1000), gzip.compress(raw) + b"\0" * 700)):
        dest = tmp_path / f"d{i}"
        dest.mkdir()
        stats = archive.extract(io.BytesIO(blob), dest)
        assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert (dest / "a").read_bytes() == b"A" * 70_000 and (dest / "b").read_bytes() == b"B" * 10


@pytest.mark.parametrize("damage", ["truncated", "crc", "garbage-after"])
def test_damaged_gzip_is_refused(sandbox: tuple[Path, Path], damage: str) -> None:
    raw = make_tar([member("a", data=os.urandom(200_000))])
    blob = bytearray(gzip.compress(raw))
    if damage == "truncated":
        blob = blob[: len(blob) - 20]
    elif damage == "crc":
        blob[-8] ^= 0xFF  # the CRC-32 in the trailer
    else:
        blob += b"not gzip at all"
    assert_rejected(sandbox, bytes(blob))


def test_members_apply_in_order_while_small_files_are_written_in_parallel(tmp_path: Path) -> None:
    """Later members win and hardlinks see their target, whatever is still being written."""
    many = [member(f"bulk/f{i}", data=str(i).encode()) for i in range(600)]  # over the queue's bound
    members = [
        *many,
        member("same", data=b"first"), member("same", data=b"second"),
        member("becomes-dir", data=b"file"), member("becomes-dir", tarfile.DIRTYPE),
        member("becomes-dir/inner", data=b"in"),
        member("target", data=b"linked"), member("link", tarfile.LNKTYPE, linkname="target"),
        member("gone", data=b"x"), member("becomes-link", data=b"y"),
        member("becomes-link", tarfile.SYMTYPE, linkname="target"),
        member("big", data=b"B" * (archive._SMALL_FILE + 1)),
    ]
    dest = tmp_path / "d"
    dest.mkdir()
    stats = archive.extract(io.BytesIO(make_tar(members)), dest)
    assert all((dest / f"bulk/f{i}").read_bytes() == str(i).encode() for i in range(600))
    assert (dest / "same").read_bytes() == b"second"
    assert (dest / "becomes-dir/inner").read_bytes() == b"in"
    assert (dest / "link").stat().st_ino == (dest / "target").stat().st_ino
    assert os.readlink(dest / "becomes-link") == "target"
    assert (dest / "big").stat().st_size == archive._SMALL_FILE + 1
    assert stats.size == sum(len(d) for _, t, d, _ in members if t == tarfile.REGTYPE)  # bytes written
    assert stat.S_IMODE((dest / "bulk/f7").stat().st_mode) == 0o644


def test_file_then_path_through_it_is_refused(sandbox: tuple[Path, Path]) -> None:
    err = assert_rejected(sandbox, make_tar([member("a", data=b"x"), member("a/b", data=b"y")]))
    assert "a/b" in err.message
