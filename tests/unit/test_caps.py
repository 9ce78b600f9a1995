"""Capabilities and the security fields of config.json (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skiff.execsvc import init, security
from skiff.execsvc import spec as specmod


def test_dockers_fourteen_defaults() -> None:
    assert len(security.DEFAULT_CAPS) == 14
    assert security.cap_mask(security.DEFAULT_CAPS) == 0xA80425FB  # CapEff of root in a Docker container
    assert (security.CAPS["CHOWN"], security.CAPS["SYS_ADMIN"], security.CAPS["CHECKPOINT_RESTORE"]) == (0, 21, 40)


def test_init_numbers_capabilities_like_the_host_side() -> None:
    # The init is stdlib-only and cannot import skiff; its own table must agree.
    assert {name: n for n, name in enumerate(init.CAP_NAMES)} == security.CAPS
    assert init.cap_mask(list(security.DEFAULT_CAPS)) == security.cap_mask(security.DEFAULT_CAPS)


def test_init_rejects_unknown_capability() -> None:
    with pytest.raises(init.StartError, match="unknown capability CAP_NO_SUCH"):
        init.cap_mask(["CAP_NO_SUCH"])


def test_config_carries_the_oci_security_fields(tmp_path: Path) -> None:
    s = specmod.ContainerSpec(id="abc", args=("sh",), rootfs=specmod.RootfsMount("bind", "/x"))
    cfg = json.loads(json.dumps(specmod.build_config(s, tmp_path, [], "")))
    caps = cfg["process"]["capabilities"]
    for key in ("bounding", "effective", "permitted"):
        assert caps[key] == list(security.DEFAULT_CAPS)
    assert caps["inheritable"] == caps["ambient"] == []
    assert cfg["process"]["noNewPrivileges"] is True
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"] and "/proc/sys" in cfg["linux"]["readonlyPaths"]
    seccomp = cfg["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["architectures"] == ["SCMP_ARCH_X86_64"]
    assert [tuple(i) for i in cfg["skiff"]["seccompFilter"]] == security.compile_bpf(seccomp)
