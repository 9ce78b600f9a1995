"""Which containers the shim's C init sets up (init.conf written), and what init.conf says."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from skiff.execsvc import cinit, devices, nsmodes, userns
from skiff.execsvc.init import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY
from skiff.execsvc.mounts import UserMount
from skiff.execsvc.nsmodes import NsModes
from skiff.execsvc.options import Options
from skiff.execsvc.security import DEFAULT_CAPS, cap_mask
from skiff.execsvc.spec import ContainerSpec, RootfsMount, build_config

ROOTFS = RootfsMount("overlay", "overlay", ("lowerdir=/l", "upperdir=/u", "workdir=/w"))
BUNDLE = Path("/run/skiff/containers/c1")


def config(ns: NsModes | None = None, privileged: bool = False, with_devices: bool = False,
           idmap: userns.IdMap | None = None, **kw: Any) -> dict[str, Any]:
    spec = ContainerSpec(id="c1", args=("true",), rootfs=ROOTFS, **kw)
    cfg = build_config(spec, BUNDLE, ["/sys/fs/cgroup/pids/skiff/c1/cgroup.procs"], "/skiff/c1")
    cfg = nsmodes.apply(cfg, ns or NsModes(), lambda cid: 4242, 1)
    cfg = devices.apply_config(cfg, (), privileged)
    if with_devices:  # (what devices.apply_config makes of a --device)
        cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    return userns.apply(cfg, idmap, privileged, spec.network_mode)


def parse(text: str) -> list[tuple[str, list[str]]]:
    """init.conf back into (key, fields), undoing the escapes as cinit.c does."""
    def unesc(f: str) -> str:
        out, i = [], 0
        while i < len(f):
            if f[i] == "\\" and i + 1 < len(f):
                out.append({"n": "\n", "t": "\t"}.get(f[i + 1], f[i + 1]))
                i += 2
            else:
                out.append(f[i])
                i += 1
        return "".join(out)
    return [(k, [unesc(x) for x in v.split("\t")]) for k, _, v in (ln.partition("=") for ln in text.splitlines())]


@pytest.mark.parametrize("kw", [
    {},
    {"network_mode": "path", "netns_path": "/run/skiff/netns/c1"},  # bridge: the shim joins the netns
    {"network_mode": "host"},
    {"user": "nobody:staff", "cwd": "/w", "hostname": "box", "rlimits": (("RLIMIT_NOFILE", 10, 20),)},
    {"options": Options(readonly_rootfs=True, tmpfs=(("/run", "size=1m"),), sysctls=(("net.ipv4.ip_forward", "1"),),
                        capabilities=("CAP_CHOWN",), seccomp_profile="unconfined", allow_new_privileges=True)},
    {"ns": NsModes(pid="host", uts="host", ipc="host", cgroupns="private")},
    {"ns": NsModes(ipc="none")},
])
def test_common_cases_take_the_c_init(kw: dict[str, Any]) -> None:
    cfg = config(**kw)
    assert cinit.unsupported(cfg) is None
    assert cinit.conf(cfg) is not None


@pytest.mark.parametrize(("kw", "reason"), [
    ({"terminal": True}, "terminal"),
    ({"idmap": userns.IdMap(100000, 100000, 65536)}, "userns-remap"),
    ({"ns": NsModes(ipc="container:other")}, "ipc namespace joined by path"),
    ({"mounts": (UserMount(type="volume", destination="/data", source="/v", copy_up=True),)}, "user mounts"),
    ({"mounts": (UserMount(type="tmpfs", destination="/t"),)}, "user mounts"),
    ({"with_devices": True}, "devices"),
    ({"privileged": True, "options": Options(privileged=True)}, "privileged"),
])
def test_rare_features_keep_init_py(kw: dict[str, Any], reason: str) -> None:
    cfg = config(**kw)
    assert cinit.unsupported(cfg) == reason
    assert cinit.conf(cfg) is None


def test_what_init_py_would_report_stays_with_it() -> None:
    cfg = config()
    cfg["process"]["capabilities"]["bounding"].append("CAP_NO_SUCH")
    assert cinit.unsupported(cfg) == "unknown capability"
    cfg = config()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NO_SUCH", "soft": 1, "hard": 1}]
    assert cinit.unsupported(cfg) == "unknown rlimit"
    cfg = config()
    cfg["process"]["args"] = ["a\0b"]
    assert cinit.conf(cfg) is None


def test_conf_carries_the_config() -> None:
    cfg = config(user="alice", cwd="/w", hostname="box", env=("A=1\n2", "T=\\t\t", "A=3"),
                 rlimits=(("RLIMIT_NOFILE", 10, 20),), options=Options(sysctls=(("net.core.somaxconn", "64"),)))
    cfg["process"]["args"] = ["sh", "-c", "echo\t'x'\n"]
    text = cinit.conf(cfg)
    assert text is not None
    lines = parse(text)
    got: dict[str, list[list[str]]] = {}
    for k, v in lines:
        got.setdefault(k, []).append(v)
    assert [v[0] for v in got["arg"]] == ["sh", "-c", "echo\t'x'\n"]
    assert [v[0] for v in got["env"]] == [f"PATH={cfg['process']['env'][0][5:]}", "A=3", "T=\\t\t"]
    assert got["username"] == [["alice"]] and got["cwd"] == [["/w"]] and got["hostname"] == [["box"]]
    assert got["rlimit"] == [["7", "10", "20", "RLIMIT_NOFILE"]]
    assert got["sysctl"] == [["net.core.somaxconn", "64"]]
    mask = str(cap_mask(DEFAULT_CAPS))
    assert got["caps"] == [[mask, mask, mask, "0"]]
    assert "ambient" not in got and got["no_new_privs"] == [["1"]]
    # mounts in order, options split into flags and data as init.py's parse_options does
    mounts = got["mount"]
    assert [m[0] for m in mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert mounts[0] == ["/proc", "proc", "proc", str(MS_NOSUID | MS_NOEXEC | MS_NODEV), ""]
    assert mounts[5][3] == str(MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY)
    assert mounts[2][4] == "newinstance,ptmxmode=0666,mode=0620,gid=5"
    # the seccomp program byte for byte
    prog = bytes.fromhex(got["seccomp"][0][0])
    assert [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)] == \
        [tuple(i) for i in cfg["skiff"]["seccompFilter"]]
    assert got["rootfs_mount"] == [["overlay", "overlay", "lowerdir=/l,upperdir=/u,workdir=/w"]]


def test_etc_binds_are_binds() -> None:
    cfg = config(etc_hosts="127.0.0.1 localhost\n")
    text = cinit.conf(cfg)
    assert text is not None
    hosts = [v for k, v in parse(text) if k == "mount" and v[0] == "/etc/hosts"]
    assert hosts == [["/etc/hosts", "", str(BUNDLE / "hosts"), str(MS_BIND), ""]]
