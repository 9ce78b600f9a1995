"""skiff cp's archive code: every path resolved inside the root, in and out, whatever the links say."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from skiff.cli.cp import renamer, split_arg
from skiff.common import safetar

ME = (os.geteuid(), os.getegid())


def archive(*entries: tuple[str, str, object]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, extra in entries:
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(extra)
                tf.addfile(ti)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(extra)
                tf.addfile(ti)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, int(extra)  # type: ignore[call-overload]
                tf.addfile(ti)
            else:
                data = bytes(extra)  # type: ignore[call-overload]
                ti.size, ti.mode = len(data), 0o640
                tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, int]:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("in-root\n")
    (tmp_path / "outside").mkdir()
    fd = os.open(r, os.O_PATH | os.O_DIRECTORY)
    yield r, fd
    os.close(fd)


def test_extraction_stays_inside(root: tuple[Path, int], tmp_path: Path) -> None:
    r, fd = root
    outside = tmp_path / "outside"
    os.symlink(str(outside), r / "abs")
    os.symlink("../../../../../../" + str(outside), r / "rel")
    with pytest.raises(safetar.CopyError):  # dangling inside the root: refused, nothing made outside
        safetar.extract_tar(fd, "/", archive(("abs/a", "f", b"1")), owner=ME)
    (r / outside.relative_to("/")).mkdir(parents=True)
    safetar.extract_tar(fd, "/", archive(("abs/a", "f", b"1"), ("rel/b", "f", b"2"),
                                         ("up", "sym", "/"), ("up/etc/c", "f", b"3")), owner=ME)
    assert list(outside.iterdir()) == []
    assert (r / outside.relative_to("/") / "a").read_bytes() == b"1"  # the link, followed inside the root
    assert (r / outside.relative_to("/") / "b").read_bytes() == b"2"
    assert (r / "etc" / "c").read_bytes() == b"3"
    for bad in ("../x", "a/../../x", "/../x"):
        with pytest.raises(safetar.CopyError) as err:
            safetar.extract_tar(fd, "/etc", archive((bad, "f", b"x")), owner=ME)
        assert err.value.kind == "invalid"
    with pytest.raises(safetar.CopyError) as err:
        safetar.extract_tar(fd, "/etc/passwd", archive(("x", "f", b"x")), owner=ME)
    assert "not a directory" in str(err.value)


def test_modes_links_and_overwrite_rules(root: tuple[Path, int]) -> None:
    r, fd = root
    safetar.extract_tar(fd, "/", archive(("d", "dir", 0o751), ("d/f", "f", b"data"), ("d/h", "hard", "d/f"),
                                         ("d/s", "sym", "f")), owner=ME)
    assert stat.S_IMODE((r / "d").stat().st_mode) == 0o751
    assert stat.S_IMODE((r / "d" / "f").stat().st_mode) == 0o640
    assert (r / "d" / "h").stat().st_ino == (r / "d" / "f").stat().st_ino
    assert os.readlink(r / "d" / "s") == "f"
    with pytest.raises(safetar.CopyError, match="cannot overwrite directory with non-directory"):
        safetar.extract_tar(fd, "/", archive(("d", "f", b"x")), owner=ME, no_overwrite_dir_non_dir=True)
    safetar.extract_tar(fd, "/", archive(("d/f", "f", b"new")), owner=ME)
    assert (r / "d" / "f").read_bytes() == b"new"


def test_reading_resolves_inside(root: tuple[Path, int], tmp_path: Path) -> None:
    r, fd = root
    secret = tmp_path / "outside" / "secret"
    secret.write_text("host\n")
    os.symlink(str(secret), r / "leak")
    os.symlink("../../../../../../../../" + str(tmp_path / "outside"), r / "dirleak")
    assert safetar.stat_path(fd, "/leak")["link_target"] == str(secret)
    with pytest.raises(safetar.CopyError) as err:
        safetar.stat_path(fd, "/leak/")
    assert err.value.kind == "not-found"
    with pytest.raises(safetar.CopyError):  # resolved inside the root, where it does not exist
        safetar.write_tar(fd, "/dirleak/.", io.BytesIO())
    out = io.BytesIO()
    safetar.write_tar(fd, "/", out, name=".")
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        names = tf.getnames()
    assert "./etc/passwd" in names and not any("secret" in n for n in names)
    out = io.BytesIO()
    safetar.write_tar(fd, "/etc/passwd", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        assert [(m.name, m.size) for m in tf.getmembers()] == [("passwd", 8)]


def test_cli_argument_rules() -> None:
    assert split_arg("web:/etc") == ("web", "/etc")
    assert split_arg("/abs:path") == ("", "/abs:path")
    assert split_arg("./web:x") == ("", "./web:x")
    assert split_arg("dir/web:x") == ("", "dir/web:x")
    assert split_arg("-") == ("", "-")
    as_new = renamer("copy")
    assert (as_new("src"), as_new("src/a/b")) == ("copy", "copy/a/b")
    contents = renamer(None)
    assert (contents("src"), contents("src/a")) == (None, "a")
