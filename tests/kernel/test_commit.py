"""commit and export over a real overlay graph: whiteouts round-trip, export leaves no mount."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from skiff.graphsvc.commit import Snapshots
from skiff.graphsvc.graph import open_graph
from skiff.types.v1 import types_pb2


@pytest.fixture
def graph(kernel_ready: None, tmp_path: Path, busybox_tar: Path):
    g = open_graph(tmp_path / "data")
    if g.driver_name != "overlay":
        pytest.skip("overlay driver not available")
    with open(busybox_tar, "rb") as f:
        g.images.import_archive(f, "busybox")
    return g


def _mounts(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def test_commit_converts_whiteouts_and_export_merges(graph, tmp_path: Path) -> None:
    c, _ = graph.create("c1", types_pb2.ContainerConfig(image="busybox"),
                        types_pb2.HostConfig())
    _, upper = graph.rootfs(c.id)
    up = Path(upper)
    (up / "etc").mkdir()
    os.mknod(up / "etc" / "motd", 0o600 | 0o020000, os.makedev(0, 0))  # overlay's whiteout
    (up / "new.txt").write_text("new")
    (up / "tmp").mkdir()
    os.setxattr(up / "tmp", "trusted.overlay.opaque", b"y")
    snaps = Snapshots(graph, tmp_path)
    assert ("D", "/etc/motd") in snaps.changes("c1") and ("A", "/new.txt") in snaps.changes("c1")

    image = snaps.commit("c1", "snap:1", "msg", "me", ["CMD [\"cat\", \"/new.txt\"]"])
    assert len(image.layers) == 2 and image.config["config"]["Cmd"] == ["cat", "/new.txt"]
    top = graph.layers.diff_path(image.layers[-1])
    assert os.stat(top / "etc" / "motd").st_rdev == 0  # the .wh. entry became a whiteout again
    assert os.getxattr(top / "tmp", "trusted.overlay.opaque") == b"y"
    assert snaps.history("snap:1")[0].comment == "msg"

    data = b"".join(snaps.export("c1"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = set(tf.getnames())
    assert "new.txt" in names and "etc/passwd" in names and "etc/motd" not in names
    assert not _mounts(tmp_path)
    assert list(tmp_path.glob("export-*")) == []
    graph.delete(c.id)
