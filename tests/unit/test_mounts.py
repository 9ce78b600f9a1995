"""-v / --mount parsing and validation (Docker's rules and messages), and what execsvc makes of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.common import errors, mounts
from skiff.execsvc import mounts as emounts
from skiff.execsvc.spec import ContainerSpec, RootfsMount, build_config
from skiff.types.v1 import types_pb2


def test_bind_forms() -> None:
    anon = mounts.parse_bind("/data")
    assert (anon.type, anon.name, anon.destination) == ("volume", "", "/data")
    named = mounts.parse_bind("cache:/c:ro,nocopy")
    assert (named.type, named.name, named.read_only, named.nocopy) == ("volume", "cache", True, True)
    bind = mounts.parse_bind("/srv:/s:rw,rslave")
    assert (bind.type, bind.name, bind.read_only, bind.propagation, bind.create_host_path) == (
        "bind", "/srv", False, "rslave", True)


@pytest.mark.parametrize("spec, message", [
    ("data:b", "mount path must be absolute"),
    ("/a:/b:xx", "invalid mode: xx"),
    ("/a:/b:nocopy", "invalid mode: nocopy"),  # nocopy is for volumes
    ("vol:/b:rshared", "invalid mode: rshared"),  # propagation is for binds
    ("bad$:/b", "includes invalid characters for a local volume name"),
    ("/a:/b:ro:x", "invalid volume specification"),
    ("/a::/b", "invalid volume specification"),
    ("./rel:/b", "a host path must be absolute"),
])
def test_bad_binds(spec: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message.replace("$", r"\$")):
        mounts.parse_bind(spec)


def test_mount_flag() -> None:
    m = mounts.parse_mount_flag("type=bind,src=/h,dst=/c,readonly,bind-propagation=rshared")
    assert (m.type, m.name, m.destination, m.read_only, m.propagation) == ("bind", "/h", "/c", True, "rshared")
    v = mounts.parse_mount_flag('source=v,target=/d,volume-nocopy=true,"volume-label=a=b",ro=false')
    assert (v.type, v.nocopy, dict(v.volume_labels), v.read_only) == ("volume", True, {"a": "b"}, False)
    t = mounts.parse_mount_flag("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1700")
    assert (t.tmpfs_size, t.tmpfs_mode) == (64 << 20, 0o1700)
    for text, message in [("target=/t,bogus=1", "unexpected key 'bogus'"), ("type=bind,source", "must be a key=value"),
                          ("type=volume", "target is required"), ("target=/t,readonly=maybe", "invalid value"),
                          ("target=/t,tmpfs-size=lots", "invalid size")]:
        with pytest.raises(errors.InvalidArgument, match=message):
            mounts.parse_mount_flag(text)


def test_validation_follows_docker(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    given = types_pb2.MountPoint(type="bind", name=missing, destination="/x")
    with pytest.raises(errors.InvalidArgument, match="bind source path does not exist"):
        mounts.collect([], [given])
    # the same path with -v is fine: it will be created
    assert [m.create_host_path for m in mounts.collect([f"{missing}:/x"], [])] == [True]
    bad = [
        (types_pb2.MountPoint(type="tmpfs", name="x", destination="/t"), "field Source must not be specified"),
        (types_pb2.MountPoint(type="volume", destination="/t", propagation="shared"), "field BindOptions"),
        (types_pb2.MountPoint(type="bind", name="/", destination="/t", nocopy=True), "field VolumeOptions"),
        (types_pb2.MountPoint(type="bind", destination="/t"), "field Source must not be empty"),
        (types_pb2.MountPoint(type="nfs", destination="/t"), "mount type unknown"),
        (types_pb2.MountPoint(type="volume", destination="/"), "destination can't be '/'"),
        (types_pb2.MountPoint(type="volume", destination="rel"), "must be absolute"),
    ]
    for mp, message in bad:
        with pytest.raises(errors.InvalidArgument, match=message):
            mounts.validate(mp)
    with pytest.raises(errors.InvalidArgument, match="Duplicate mount point: /x"):
        mounts.collect(["/x", "vol:/x/"], [])
    assert mounts.clean("//a/./b/../c/") == "/a/c"


def test_execsvc_turns_mounts_into_init_entries(tmp_path: Path) -> None:
    ms = (emounts.UserMount(type="volume", destination="/a/b", source="/v/_data", copy_up=True),
          emounts.UserMount(type="bind", destination="/a", source="/h", read_only=True, propagation="rslave"),
          emounts.UserMount(type="tmpfs", destination="/t", tmpfs_size=1024, tmpfs_mode=0o700))
    spec = ContainerSpec(id="c1", args=("true",), rootfs=RootfsMount("bind", "/r"), mounts=ms)
    spec.validate()
    cfg = build_config(spec, tmp_path, [], "skiff/c1")
    entries = cfg["skiff"]["userMounts"]
    assert [e["destination"] for e in entries] == ["/a", "/t", "/a/b"]  # parents first
    assert entries[0] == {"type": "bind", "destination": "/a", "readonly": True, "source": "/h",
                          "propagation": "rslave", "copyUp": False}
    assert entries[1]["data"] == "size=1024,mode=700"
    assert cfg["linux"]["rootfsPropagation"] == "rslave"
    plain = build_config(ContainerSpec(id="c2", args=("true",), rootfs=RootfsMount("bind", "/r")), tmp_path, [], "x")
    assert "userMounts" not in plain["skiff"] and "rootfsPropagation" not in plain["linux"]
    for bad in (emounts.UserMount(type="bind", destination="/", source="/h"),
                emounts.UserMount(type="bind", destination="/x", source="rel"),
                emounts.UserMount(type="bind", destination="/x\n", source="/h"),
                emounts.UserMount(type="bind", destination="/x", source="/h", propagation="weird")):
        with pytest.raises(errors.InvalidArgument):
            bad.validate()


def test_missing_bind_sources(tmp_path: Path) -> None:
    made = tmp_path / "made"
    emounts.prepare_host_paths((emounts.UserMount(type="bind", destination="/x", source=str(made),
                                                  create_host_path=True),))
    assert made.is_dir()
    with pytest.raises(errors.InvalidArgument, match="bind source path does not exist"):
        emounts.prepare_host_paths((emounts.UserMount(type="bind", destination="/x",
                                                      source=str(tmp_path / "gone")),))
