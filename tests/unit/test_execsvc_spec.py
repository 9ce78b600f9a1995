"""ContainerSpec validation and the bundle it becomes (no root needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from skiff.common.errors import InvalidArgument
from skiff.execsvc import spec as specmod
from skiff.execsvc.spec import ContainerSpec, RootfsMount

ROOTFS = RootfsMount("overlay", "overlay", ("lowerdir=/l", "upperdir=/u", "workdir=/w"))
GOOD = ContainerSpec(id="abc", args=("sh",), rootfs=ROOTFS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "../x"}, "invalid container id"),
        ({"id": ""}, "invalid container id"),
        ({"args": ()}, "no command"),
        ({"args": ("",)}, "no command"),
        ({"env": ("NOEQUALS",)}, "invalid environment entry"),
        ({"env": ("=v",)}, "invalid environment entry"),
        ({"cwd": "relative"}, "not absolute"),
        ({"user": "a b"}, "invalid user"),
        ({"hostname": "-bad"}, "invalid hostname"),
        ({"hostname": "x" * 65}, "invalid hostname"),
        ({"rootfs": RootfsMount("nfs", "x")}, "unsupported root filesystem"),
        ({"rootfs": RootfsMount("overlay", "overlay", ("lowerdir=/a,upperdir=/b",))}, "must not contain ','"),
        ({"network_mode": "bridge"}, "network mode"),
        ({"network_mode": "path"}, "exactly when"),
        ({"netns_path": "/run/netns/x"}, "exactly when"),
        ({"network_mode": "path", "netns_path": "rel"}, "not absolute"),
        ({"memory_limit": 1024}, "minimum of 6 MiB"),
        ({"memory_limit": -1}, "minimum of 6 MiB"),
        ({"pids_limit": -1}, "negative"),
        ({"log_path": "x.log"}, "not absolute"),
        ({"rlimits": (("RLIMIT_NOFILE", 10, 5),)}, "invalid rlimit"),
    ],
)
def test_invalid_specs(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        dataclasses.replace(GOOD, **change).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["", "nobody", "1000", "1000:1000", "www-data:adm"])
def test_valid_users(user: str) -> None:
    dataclasses.replace(GOOD, user=user).validate()


def test_config_is_oci_shaped(tmp_path: Path) -> None:
    s = dataclasses.replace(GOOD, env=("A=1",), user="1000:50", memory_limit=64 << 20, pids_limit=9)
    cfg = specmod.build_config(s, tmp_path, ["/cg/cgroup.procs"], "/skiff/abc")
    assert cfg["ociVersion"].startswith("1.")
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 50}
    assert cfg["process"]["env"][0].startswith("PATH=") and "A=1" in cfg["process"]["env"]
    assert cfg["root"]["path"] == str(tmp_path / "rootfs")
    assert cfg["hostname"] == "abc"
    assert {"type": "network"} in cfg["linux"]["namespaces"]
    assert cfg["linux"]["resources"] == {"memory": {"limit": 64 << 20}, "pids": {"limit": 9}}
    assert [m["destination"] for m in cfg["mounts"]].index("/dev") < [m["destination"] for m in cfg["mounts"]].index(
        "/dev/pts"
    )
    assert cfg["skiff"]["rootfsMount"]["options"] == list(ROOTFS.options)
    assert cfg["skiff"]["cgroupProcs"] == ["/cg/cgroup.procs"]
    named = specmod.build_config(dataclasses.replace(GOOD, user="nobody"), tmp_path, [], "")
    assert named["process"]["user"]["username"] == "nobody"


def test_network_modes_and_shim_conf(tmp_path: Path) -> None:
    host = dataclasses.replace(GOOD, network_mode="host")
    assert not specmod.clone_flags(host) & specmod.CLONE_NEWNET
    assert specmod.clone_flags(GOOD) & specmod.CLONE_NEWNET
    joined = dataclasses.replace(GOOD, network_mode="path", netns_path="/run/netns/n1")
    assert not specmod.clone_flags(joined) & specmod.CLONE_NEWNET
    conf = specmod.shim_conf(joined, tmp_path, "/cg/memory.events")
    assert conf.splitlines() == [
        f"clone_flags={specmod.clone_flags(joined):#x}",
        f"log={tmp_path}/abc-json.log",
        "netns=/run/netns/n1",
        "oom=/cg/memory.events",
    ]
    cfg = specmod.build_config(joined, tmp_path, [], "")
    assert {"type": "network", "path": "/run/netns/n1"} in cfg["linux"]["namespaces"]
