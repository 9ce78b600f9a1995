"""ImageStore: import, references, lookup, rmi semantics (Docker's ImageDelete)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from skiff.common.errors import (
    IMAGE_IN_USE,
    IMAGE_NOT_FOUND,
    UNSAFE_ARCHIVE,
    Conflict,
    InvalidArgument,
    NotFound,
)
from skiff.graphsvc import reference
from skiff.graphsvc.graphdb import ContainerRecord, GraphDB
from skiff.graphsvc.images import ImageChanges, ImageStore
from skiff.graphsvc.layers import VfsDriver

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    out = tmp_path_factory.mktemp("img") / "busybox.tar"
    subprocess.run(["sh", str(REPO / "deploy/mkimage-busybox.sh"), str(out)], check=True, capture_output=True)
    return out


def small_tar(content: bytes = b"hello") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("etc/hello")
        ti.size = len(content)
        tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path, VfsDriver(tmp_path), GraphDB(":memory:"))


def test_import_busybox(store: ImageStore, busybox_tar: Path) -> None:
    raw = busybox_tar.read_bytes()
    with open(busybox_tar, "rb") as f:
        img = store.import_archive(f, "busybox", message="imported")
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert img.layers == [diff_id]
    assert img.repo_tags == ["busybox:latest"]
    assert img.size > 500_000  # the static busybox binary
    cfg = img.config
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert cfg["config"]["Cmd"] == ["sh"]
    assert cfg["os"] == "linux" and cfg["architecture"]
    assert cfg["history"][0]["comment"] == "imported"
    # The id is the sha256 of the stored config bytes.
    stored = (store.dir / img.id.removeprefix("sha256:")).read_bytes()
    assert img.id == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert json.loads(stored) == cfg
    rootfs = store.layers.diff_path(diff_id)
    assert os.readlink(rootfs / "bin/sh") == "busybox"
    assert (rootfs / "etc/passwd").read_text().startswith("root:x:0:0")
    assert store.get("busybox") == store.get("busybox:latest") == store.get(img.id)


def test_import_gzip_stream_and_changes(store: ImageStore) -> None:
    raw = small_tar()
    changes = ImageChanges(cmd=["/bin/app"], entrypoint=["/init"], env=["A=1"], workdir="/srv", user="nobody")
    img = store.import_archive(io.BytesIO(gzip.compress(raw)), "example.com:5000/team/app:v1.2", changes)
    assert img.layers == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    assert img.repo_tags == ["example.com:5000/team/app:v1.2"]
    c = img.config["config"]
    assert c == {"Cmd": ["/bin/app"], "Entrypoint": ["/init"], "Env": ["A=1"], "WorkingDir": "/srv",
                 "User": "nobody"}


def test_import_untagged_and_retag_makes_dangling(store: ImageStore) -> None:
    a = store.import_archive(io.BytesIO(small_tar(b"a")), None)
    assert a.repo_tags == []
    b = store.import_archive(io.BytesIO(small_tar(b"b")), "app")
    c = store.import_archive(io.BytesIO(small_tar(b"c")), "app")
    assert store.get("app").id == c.id
    assert store.get(b.id).repo_tags == []
    assert {i.id for i in store.list()} == {a.id, b.id, c.id}


@pytest.mark.parametrize(
    ("ref", "why"),
    [("Busybox", "lowercase"), ("bad name", "invalid"), ("app:", "tag"), ("a@sha256:00", "digest"),
     ("-app", "invalid")],
)
def test_invalid_reference_rejected_before_unpacking(store: ImageStore, ref: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        store.import_archive(io.BytesIO(small_tar()), ref)
    assert why in ei.value.message
    assert list((store.layers.layers_dir).iterdir()) == []  # type: ignore[attr-defined]


def test_reference_normalisation() -> None:
    assert str(reference.parse("busybox")) == "busybox:latest"
    assert str(reference.parse("docker.io/library/busybox:1.36")) == "busybox:1.36"
    assert str(reference.parse("docker.io/me/app")) == "me/app:latest"
    assert str(reference.parse("localhost:5000/app")) == "localhost:5000/app:latest"
    assert str(reference.parse("a__b/c-d.e_f")) == "a__b/c-d.e_f:latest"


def test_unsafe_import_leaves_nothing(store: ImageStore, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../escape")
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(InvalidArgument) as ei:
        store.import_archive(io.BytesIO(buf.getvalue()), "evil")
    assert ei.value.reason == UNSAFE_ARCHIVE
    assert store.list() == []
    assert list(store.dir.iterdir()) == []
    assert not (tmp_path.parent / "escape").exists()
    with pytest.raises(NotFound):
        store.get("evil")


def test_lookup_by_prefix_and_not_found(store: ImageStore) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "app")
    hexid = img.id.removeprefix("sha256:")
    assert store.get(hexid).id == img.id
    assert store.get(hexid[:4]).id == img.id
    assert store.get("sha256:" + hexid[:8]).id == img.id
    for missing in ("nosuch", "nosuch:tag", hexid[:3], "0" * 64, "sha256:ffff"):
        if hexid.startswith("ffff") and missing == "sha256:ffff":
            continue
        with pytest.raises(NotFound) as ei:
            store.get(missing)
        assert ei.value.reason == IMAGE_NOT_FOUND
        assert ei.value.message == f"No such image: {missing}"


def test_rmi_one_of_several_tags_only_untags(store: ImageStore) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "app")
    store.tag("app", "app:v1")
    assert store.remove("app:v1") == [("Untagged", "app:v1")]
    assert store.get("app").id == img.id
    records = store.remove("app")
    assert records == [("Untagged", "app:latest"), ("Deleted", img.id), ("Deleted", img.layers[0])]
    assert store.list() == []
    assert not store.layers.exists(img.layers[0])


def test_rmi_by_id_with_several_tags_needs_force(store: ImageStore) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "app")
    store.tag(img.id, "other")
    with pytest.raises(Conflict) as ei:
        store.remove(img.id[7:19])
    assert "multiple repositories" in ei.value.message
    records = store.remove(img.id[7:19], force=True)
    assert records == [("Untagged", "app:latest"), ("Untagged", "other:latest"), ("Deleted", img.id),
                       ("Deleted", img.layers[0])]


def test_rmi_image_used_by_container(store: ImageStore) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "app")
    c = store.db.create_container(ContainerRecord(image_id=img.id, name="user"))
    for ref in ("app", img.id):
        with pytest.raises(Conflict) as ei:
            store.remove(ref)
        assert ei.value.reason == IMAGE_IN_USE
        assert c.id[:12] in ei.value.message
        assert ei.value.metadata["container_id"] == c.id
    assert store.get("app").id == img.id  # nothing was untagged by the failed attempts
    assert store.remove("app", force=True)[:2] == [("Untagged", "app:latest"), ("Deleted", img.id)]


def test_shared_layer_removed_with_last_image(store: ImageStore) -> None:
    a = store.import_archive(io.BytesIO(small_tar()), "one", ImageChanges(cmd=["a"]))
    b = store.import_archive(io.BytesIO(small_tar()), "two", ImageChanges(cmd=["b"]))
    assert a.layers == b.layers and a.id != b.id
    assert store.remove("one") == [("Untagged", "one:latest"), ("Deleted", a.id)]
    assert store.layers.exists(a.layers[0])
    assert store.remove("two")[-1] == ("Deleted", b.layers[0])


def test_layer_kept_while_a_prepared_container_uses_it(store: ImageStore) -> None:
    img = store.import_archive(io.BytesIO(small_tar()), "app")
    store.layers.prepare("c1", img.layers)
    assert store.remove("app", force=True) == [("Untagged", "app:latest"), ("Deleted", img.id)]
    assert store.layers.exists(img.layers[0])
    store.layers.release("c1")
    store.layers.remove(img.layers[0])
