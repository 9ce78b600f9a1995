"""save/load: the archive layout, round trips, gzip and OCI layouts, and bad archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from skiff.common.errors import InvalidArgument
from skiff.graphsvc import diff as diff_mod
from skiff.graphsvc.graphdb import GraphDB
from skiff.graphsvc.images import ImageStore
from skiff.graphsvc.layers import VfsDriver
from skiff.graphsvc.saveload import Loader, Saver


def small_tar(name: str = "etc/hello", content: bytes = b"hello") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(content)
        tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def _store(root: Path) -> ImageStore:
    root.mkdir(parents=True, exist_ok=True)
    return ImageStore(root, VfsDriver(root), GraphDB(":memory:"))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return _store(tmp_path / "a")


def _save(store: ImageStore, tmp: Path, refs: list[str]) -> bytes:
    return b"".join(Saver(store, tmp).save(refs))


def _members(archive: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        for m in tf:
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def test_save_writes_docker_and_oci_layouts(store: ImageStore, tmp_path: Path) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "hello:v1")
    members = _members(_save(store, tmp_path, ["hello:v1"]))
    manifest = json.loads(members["manifest.json"])
    assert manifest == [{"Config": "blobs/sha256/" + img.id[7:], "RepoTags": ["hello:v1"],
                         "Layers": ["blobs/sha256/" + img.layers[0][7:]]}]
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/hello:v1"
    oci = json.loads(members["blobs/sha256/" + desc["digest"][7:]])
    assert oci["layers"][0]["digest"] == img.layers[0]
    for name, data in members.items():  # every blob is what its name says
        if name.startswith("blobs/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]


def test_round_trip_with_gzip_layer_and_gzip_archive(store: ImageStore, tmp_path: Path) -> None:
    img = store.import_archive(io.BytesIO(gzip.compress(small_tar())), "hello")
    archive = _save(store, tmp_path, ["hello", img.id])
    other = _store(tmp_path / "b")
    messages, images = Loader(other, tmp_path).load(io.BytesIO(gzip.compress(archive)))
    assert messages == ["Loaded image: hello:latest"]
    assert images[0].id == img.id and images[0].layers == img.layers
    assert other.content.blob_for(img.layers[0]) is not None


def test_load_by_id_only_prints_the_id(store: ImageStore, tmp_path: Path) -> None:
    img = store.import_archive(io.BytesIO(small_tar()))
    other = _store(tmp_path / "b")
    messages, _ = Loader(other, tmp_path).load(io.BytesIO(_save(store, tmp_path, [img.id])))
    assert messages == [f"Loaded image ID: {img.id}"]


def _oci_only(archive: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for m in src:
            if m.name != "manifest.json":
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    return buf.getvalue()


def test_load_plain_oci_layout(store: ImageStore, tmp_path: Path) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "example.com/x/hello:v2")
    other = _store(tmp_path / "b")
    messages, images = Loader(other, tmp_path).load(io.BytesIO(_oci_only(_save(store, tmp_path, [
        "example.com/x/hello:v2"]))))
    assert messages == ["Loaded image: example.com/x/hello:v2"]
    assert images[0].id == img.id


def test_load_refuses_a_layer_that_does_not_match_its_diff_id(store: ImageStore, tmp_path: Path) -> None:
    store.import_archive(io.BytesIO(small_tar()), "hello")
    members = _members(_save(store, tmp_path, ["hello"]))
    manifest = json.loads(members["manifest.json"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            if name == manifest[0]["Layers"][0]:
                data = small_tar(content=b"tampered")
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    other = _store(tmp_path / "b")
    with pytest.raises(InvalidArgument, match="the config says"):
        Loader(other, tmp_path).load(io.BytesIO(buf.getvalue()))
    assert other.list() == []


@pytest.mark.parametrize("data", [b"not a tar at all" * 100, small_tar("x", b"y")])
def test_load_refuses_non_image_archives(store: ImageStore, tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        Loader(store, tmp_path).load(io.BytesIO(data))


def test_load_refuses_unsafe_layer(store: ImageStore, tmp_path: Path) -> None:
    evil = small_tar("../../escape", b"x")
    diff_id = "sha256:" + hashlib.sha256(evil).hexdigest()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [("layer.tar", evil), ("c.json", config),
                           ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["evil:1"],
                                                          "Layers": ["layer.tar"]}]).encode())]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    with pytest.raises(InvalidArgument):
        Loader(store, tmp_path).load(io.BytesIO(buf.getvalue()))
    assert not (tmp_path.parent / "escape").exists()


def test_upperdir_changes_and_layer(tmp_path: Path) -> None:
    import os

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (lower / "etc", lower / "bin", upper / "etc", upper / "proc", upper / "gone-dir"):
        d.mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root")
    (lower / "bin" / "sh").write_text("sh")
    (upper / "etc" / "passwd").write_text("root\nnew")
    (upper / "new").write_text("x")
    (upper / "etc" / "hosts").write_text("")  # a runtime mount point: never reported
    os.mknod(upper / "bin", 0o600 | 0o020000, os.makedev(0, 0))  # whiteout (needs root)
    assert diff_mod.changes(upper, [lower]) == [
        ("D", "/bin"), ("C", "/etc"), ("C", "/etc/passwd"), ("A", "/gone-dir"), ("A", "/new")]
    buf = io.BytesIO()
    diff_mod.write_layer(upper, buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = tf.getnames()
    assert ".wh.bin" in names and "etc/passwd" in names and "etc/hosts" not in names and "proc" not in names
