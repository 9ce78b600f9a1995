"""Namespace modes in config.json and the shim's clone flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skiff.common import errors
from skiff.execsvc import spec as specmod
from skiff.execsvc.nsmodes import NsModes, apply
from skiff.execsvc.spec import ContainerSpec, RootfsMount


def _spec(**kw: Any) -> ContainerSpec:
    return ContainerSpec(id="c1", args=("true",), rootfs=RootfsMount("bind", "/tmp"), ns=NsModes(**kw))


def _cfg(s: ContainerSpec, donor: int = 4242, version: int = 1) -> dict[str, Any]:
    cfg = specmod.build_config(s, Path("/b"), [], "/skiff/c1")
    return apply(cfg, s.ns, lambda cid: donor, version)


def _types(cfg: dict[str, Any]) -> list[str]:
    return [n["type"] for n in cfg["linux"]["namespaces"]]


def _shm(cfg: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in cfg["mounts"] if m["destination"] == "/dev/shm"), None)


def test_defaults_private() -> None:
    s = _spec()
    flags = specmod.clone_flags(s)
    assert flags & specmod.CLONE_NEWPID and flags & specmod.CLONE_NEWUTS and flags & specmod.CLONE_NEWIPC
    cfg = _cfg(s)
    assert _types(cfg) == ["pid", "mount", "uts", "ipc", "network"] and cfg["hostname"] == "c1"
    assert _shm(cfg)["type"] == "tmpfs"  # type: ignore[index]
    assert "cgroup" in _types(_cfg(s, version=2))  # Docker's default: private on cgroup v2, host on v1


def test_host_modes_drop_the_namespaces() -> None:
    s = _spec(pid="host", uts="host", ipc="host", cgroupns="host")
    flags = specmod.clone_flags(s)
    assert not flags & (specmod.CLONE_NEWPID | specmod.CLONE_NEWUTS | specmod.CLONE_NEWIPC)
    cfg = _cfg(s, version=2)
    assert _types(cfg) == ["mount", "network"] and "hostname" not in cfg
    assert _shm(cfg)["source"] == "/dev/shm"  # type: ignore[index]


def test_ipc_container_joins_by_path_and_clones_the_donors_shm() -> None:
    s = _spec(ipc="container:abc")
    assert not specmod.clone_flags(s) & specmod.CLONE_NEWIPC
    cfg = _cfg(s, donor=77)
    assert {"type": "ipc", "path": "/proc/77/ns/ipc"} in cfg["linux"]["namespaces"]
    assert _shm(cfg)["skiffMountNamespace"] == "/proc/77/ns/mnt"  # type: ignore[index]
    assert _shm(_cfg(_spec(ipc="none"))) is None


def test_ipc_donor_not_running() -> None:
    s = _spec(ipc="container:abc")
    cfg = specmod.build_config(s, Path("/b"), [], "/skiff/c1")

    def gone(cid: str) -> int:
        raise errors.FailedPrecondition(f"cannot join IPC of a non running container: {cid}")
    with pytest.raises(errors.FailedPrecondition, match="non running"):
        apply(cfg, s.ns, gone)


@pytest.mark.parametrize("kw", [{"pid": "container:x"}, {"uts": "private"}, {"ipc": "container:"},
                                {"ipc": "container:../x"}, {"cgroupns": "shared"}, {"userns": "private"}])
def test_invalid(kw: dict[str, str]) -> None:
    with pytest.raises(errors.InvalidArgument):
        _spec(**kw).validate()


def test_userns_host_is_not_remapped_and_allows_what_the_remap_refuses() -> None:
    """Under --userns-remap, --userns host gives the container no user namespace (and no map),
    so --privileged and the host's namespaces are allowed again."""
    from skiff.execsvc import userns

    remap = userns.IdMap(300000, 300000, 65536)
    cfg = {"linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "uts", "ipc")]}}
    assert "uidMappings" in userns.apply(json_copy(cfg), remap, False, "none")["linux"]
    with pytest.raises(errors.InvalidArgument, match="privileged mode is incompatible"):
        userns.apply(json_copy(cfg), remap, True, "none")
    host = _spec(userns="host")
    host.validate()
    assert host.ns.userns == "host"
    assert userns.for_mode(remap, "") == remap and userns.for_mode(None, "host") is None
    out = userns.apply(json_copy(cfg), userns.for_mode(remap, host.ns.userns), True, "host")
    assert "uidMappings" not in out["linux"] and {"type": "user"} not in out["linux"]["namespaces"]


def json_copy(cfg: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(cfg))
