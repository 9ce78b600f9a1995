"""--userns-remap: subordinate id ranges (Docker's /etc/subuid rules) and the config it makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.common import errors
from skiff.execsvc import userns


def _files(tmp_path: Path, uid_lines: str, gid_lines: str) -> tuple[Path, Path]:
    (tmp_path / "subuid").write_text(uid_lines)
    (tmp_path / "subgid").write_text(gid_lines)
    return tmp_path / "subuid", tmp_path / "subgid"


def test_ranges(tmp_path: Path) -> None:
    u, g = _files(tmp_path, "other:1:2\nremap:100000:65536\nremap:900000:10\n", "remap:200000:1000\n")
    assert userns.parse("remap", u, g) == userns.IdMap(100000, 200000, 1000)  # first range; the smaller size
    u, g = _files(tmp_path, "dockremap:300000:65536\n", "grp:400000:65536\n")
    assert userns.parse("default:grp", u, g) == userns.IdMap(300000, 400000, 65536)
    u, g = _files(tmp_path, "0:0:65536\n", "0:0:65536\n")
    with pytest.raises(errors.InvalidArgument, match="host root"):
        userns.parse("0", u, g)
    with pytest.raises(errors.InvalidArgument, match="no subordinate uid range for nobody-here"):
        userns.parse("nobody-here", u, g)


def test_config_and_refusals() -> None:
    idmap = userns.IdMap(100000, 100000, 65536)
    cfg = {"linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "uts", "ipc")]}}
    out = userns.apply(cfg, idmap, privileged=False, network_mode="path")
    assert out["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert {"type": "user"} in out["linux"]["namespaces"]
    with pytest.raises(errors.InvalidArgument, match="privileged mode is incompatible"):
        userns.apply(cfg, idmap, privileged=True, network_mode="none")
    with pytest.raises(errors.InvalidArgument, match="host's network namespace"):
        userns.apply(cfg, idmap, privileged=False, network_mode="host")
    no_pid = {"linux": {"namespaces": [{"type": t} for t in ("mount", "uts", "ipc")]}}
    with pytest.raises(errors.InvalidArgument, match="host PID namespace"):
        userns.apply(no_pid, idmap, privileged=False, network_mode="none")
    assert userns.apply(cfg, None, privileged=True, network_mode="host") is cfg
