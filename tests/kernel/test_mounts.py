"""User mounts made by the init, and the cp helper, on a real kernel (no services)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.execsvc.copying import Copier
from skiff.execsvc.mounts import UserMount
from skiff.execsvc.runtime import Runtime
from skiff.types.v1 import types_pb2
from tests.kernel.test_runtime import MakeRootfs, run

pytestmark = pytest.mark.kernel


def test_volume_copy_up_bind_and_read_only(runtime: Runtime, make_rootfs: MakeRootfs, tmp_path: Path) -> None:
    vol, bind = tmp_path / "vol", tmp_path / "bind"
    vol.mkdir()
    bind.mkdir()
    (bind / "in").write_text("from host\n")
    (bind / "t").mkdir()  # a mount point under a read-only bind must exist already
    mounts = (UserMount(type="volume", destination="/etc", source=str(vol), copy_up=True),
              UserMount(type="bind", destination="/mnt/b", source=str(bind), read_only=True),
              UserMount(type="tmpfs", destination="/mnt/b/t", tmpfs_size=1 << 20))
    code, out, err = run(runtime, make_rootfs, "cat /etc/passwd | head -1; cat /mnt/b/in; "
                         "touch /mnt/b/x 2>/dev/null || echo ro; touch /mnt/b/t/y && echo tmpfs-rw; "
                         "echo new > /etc/added", mounts=mounts)
    assert code == 0, err
    assert out.splitlines() == ["root:x:0:0:root:/root:/bin/sh", "from host", "ro", "tmpfs-rw"]
    assert (vol / "passwd").exists() and (vol / "added").read_text() == "new\n"  # copied up, then written
    # and a missing mount point under a read-only bind is a clear start error
    with pytest.raises(errors.Internal, match=r"mount destination .*/mnt/b/u: Read-only file system"):
        run(runtime, make_rootfs, "true", cid="c2", mounts=(
            UserMount(type="bind", destination="/mnt/b", source=str(bind), read_only=True),
            UserMount(type="tmpfs", destination="/mnt/b/u")))
    assert not (bind / "x").exists() and list((bind / "t").iterdir()) == []


def root(runtime: Runtime, cid: str, rootfs: object, mounts: tuple[UserMount, ...] = ()) -> exec_pb2.ContainerRoot:
    r = exec_pb2.ContainerRoot(id=cid, rootfs=types_pb2.Mount(type=rootfs.type, source=rootfs.source,  # type: ignore[attr-defined]
                                                                 options=list(rootfs.options)))  # type: ignore[attr-defined]
    for m in mounts:
        r.mounts.append(types_pb2.MountPoint(type=m.type, destination=m.destination, source=m.source,
                                             read_only=m.read_only))
    return r


def test_cp_into_a_stopped_container_leaves_no_mount(runtime: Runtime, make_rootfs: MakeRootfs,
                                                     tmp_path: Path) -> None:
    rootfs, upper = make_rootfs()
    vol = tmp_path / "v"
    vol.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"hi"))
    cp = Copier(runtime)
    r = root(runtime, "never-started", rootfs, (UserMount(type="volume", destination="/data", source=str(vol)),))
    for dest in ("/root", "/data"):
        cp.copy_in(exec_pb2.CopyInOptions(root=r, path=dest), iter([buf.getvalue()]))
    assert (upper / "root" / "hello").read_bytes() == b"hi"  # the writable layer, not the image
    assert (vol / "hello").read_bytes() == b"hi"  # the volume, as mounted in the container
    assert cp.stat(r, "/data/hello").size == 2
    parts = list(cp.copy_out(r, "/root"))
    assert parts[0].stat.name == "root"
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.chunk for p in parts[1:]))) as tf:
        assert "root/hello" in tf.getnames()
    assert list((runtime.exec_root / "cp").iterdir()) == []
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
