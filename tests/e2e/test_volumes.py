"""Mounts and volumes, driven through the CLI and checked from inside containers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout


def test_a_named_volume_carries_data_between_containers(skiff) -> None:
    ok(skiff("volume", "create", "--label", "team=a", "shared"))
    try:
        ok(skiff("run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo hello > /data/f"))
        assert ok(skiff("run", "--rm", "--mount", "source=shared,target=/x,readonly", "busybox",
                        "cat", "/x/f")) == "hello\n"
        assert "shared" in ok(skiff("volume", "ls", "-q", "--filter", "label=team=a")).split()
        info = json.loads(ok(skiff("volume", "inspect", "shared")))[0]
        assert info["Name"] == "shared" and info["Driver"] == "local" and info["Labels"] == {"team": "a"}
        assert info["Mountpoint"].endswith("/volumes/shared/_data")
    finally:
        skiff("volume", "rm", "shared")
    assert "shared" not in skiff("volume", "ls", "-q").stdout.split()


def _df_volumes(skiff) -> list[str]:
    rows = [line.split() for line in ok(skiff("system", "df")).splitlines()]
    return next(r[2:] for r in rows if r[:2] == ["Local", "Volumes"])


def test_system_df_sizes_volumes(skiff) -> None:
    """`system df` counts the bytes in volumes (a hard link once), active while a container uses them."""
    ok(skiff("volume", "create", "dfsized"))
    try:
        total, active, size = _df_volumes(skiff)[:3]
        assert size.endswith("B")
        ok(skiff("run", "--rm", "-v", "dfsized:/d", "busybox", "sh", "-c",
                 "head -c 3000000 /dev/zero > /d/f && ln /d/f /d/again"))
        assert _df_volumes(skiff)[0] == total
        cid = ok(skiff("create", "-v", "dfsized:/d", "busybox", "true")).strip()
        try:
            after = _df_volumes(skiff)
            assert int(after[1]) == int(active) + 1
        finally:
            skiff("rm", cid)
        # 3 MB more, not 6: the hard link is counted once
        assert _human(after[2]) - _human(size) == pytest.approx(3_000_000, rel=0.01, abs=5_000)
    finally:
        skiff("volume", "rm", "dfsized")


def _human(text: str) -> float:
    """``4.26MB`` -> bytes (decimal units, as `system df` prints them)."""
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise AssertionError(f"not a size: {text!r}")


def test_read_only_mounts_refuse_writes(skiff, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("x\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "ro-test", str(sub)], check=True)
    try:
        script = ("cat /h/in; touch /h/new 2>/dev/null || echo bind-ro; touch /v/new 2>/dev/null || echo vol-ro;"
                  " touch /h/sub/new 2>/dev/null || echo submount-ro")
        out = ok(skiff("run", "--rm", "-v", f"{tmp_path}:/h:ro", "-v", "rovol:/v:ro", "busybox", "sh", "-c",
                       script))
        assert out.split() == ["x", "bind-ro", "vol-ro", "submount-ro"]  # recursively read-only
        assert not (tmp_path / "new").exists() and not (sub / "new").exists()
    finally:
        subprocess.run(["umount", str(sub)], check=True)
    ok(skiff("volume", "rm", "rovol"))


def test_a_bind_mount_writes_through_to_the_host(skiff, tmp_path: Path) -> None:
    src = tmp_path / "created-by-v"  # missing: -v creates it, as Docker does
    ok(skiff("run", "--rm", "-v", f"{src}:/out", "busybox", "sh", "-c", "echo hi > /out/f"))
    assert (src / "f").read_text() == "hi\n"
    r = skiff("run", "--rm", "--mount", f"type=bind,source={tmp_path}/missing,target=/x", "busybox", "true")
    assert r.returncode == 125
    assert "bind source path does not exist" in r.stderr
    assert not (tmp_path / "missing").exists()


def test_tmpfs_mount(skiff) -> None:
    out = ok(skiff("run", "--rm", "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=1770",
                   "busybox", "sh", "-c", "stat -c %a /scratch; grep ' /scratch ' /proc/mounts"))
    mode, line = out.splitlines()
    assert mode == "1770"
    assert line.split()[2] == "tmpfs" and "size=1024k" in line and "nosuid" in line


def test_a_new_volume_is_filled_from_the_image(skiff) -> None:
    ok(skiff("run", "--name", "seed", "busybox", "sh", "-c",
             "mkdir /data && echo seed > /data/f && chown 7:8 /data/f && chmod 640 /data/f && chmod 750 /data"))
    try:
        ok(skiff("commit", "--change", "VOLUME /data", "seed", "seeded:1"))
    finally:
        ok(skiff("rm", "seed"))
    try:
        out = ok(skiff("run", "--rm", "-v", "filled:/data", "seeded:1", "stat", "-c", "%a %u:%g %n",
                       "/data", "/data/f"))
        assert out.splitlines() == ["750 0:0 /data", "640 7:8 /data/f"]
        # The image's VOLUME alone: an anonymous volume, filled the same way, and removed by rm -v.
        ok(skiff("run", "--name", "anon", "seeded:1", "cat", "/data/f"))
        mounts = json.loads(ok(skiff("inspect", "anon")))[0]["Mounts"]
        assert [(m["Type"], m["Destination"], m["RW"]) for m in mounts] == [("volume", "/data", True)]
        name = mounts[0]["Name"]
        assert len(name) == 64 and name in ok(skiff("volume", "ls", "-q")).split()
        ok(skiff("rm", "-v", "anon"))
        assert name not in ok(skiff("volume", "ls", "-q")).split()
        # volume-nocopy: the volume stays empty.
        out = ok(skiff("run", "--rm", "--mount", "source=empty,target=/data,volume-nocopy", "seeded:1",
                       "ls", "-A", "/data"))
        assert out == ""
    finally:
        skiff("volume", "rm", "filled", "empty")
        skiff("rmi", "seeded:1")


def test_a_volume_in_use_cannot_be_removed(skiff) -> None:
    ok(skiff("create", "--name", "holder", "-v", "busy:/b", "busybox", "true"))
    try:
        r = skiff("volume", "rm", "busy")
        assert r.returncode == 1 and "volume is in use" in r.stderr
        assert "busy" not in ok(skiff("volume", "ls", "-q", "--filter", "dangling=true")).split()
    finally:
        ok(skiff("rm", "-v", "holder"))
    # a named volume survives rm -v; then it is dangling and prune -a takes it
    assert "busy" in ok(skiff("volume", "ls", "-q", "--filter", "dangling=true")).split()
    out = ok(skiff("volume", "prune", "-a", "-f"))
    assert "busy" in out.split()


def test_rm_v_and_run_rm_remove_anonymous_volumes(skiff) -> None:
    before = set(ok(skiff("volume", "ls", "-q")).split())
    ok(skiff("run", "--rm", "-v", "/anon", "busybox", "touch", "/anon/x"))
    ok(skiff("run", "--name", "keep", "-v", "/anon", "busybox", "touch", "/anon/x"))
    made = set(ok(skiff("volume", "ls", "-q")).split()) - before
    assert len(made) == 1
    ok(skiff("rm", "keep"))  # without -v the volume stays (dangling), as Docker
    assert made <= set(ok(skiff("volume", "ls", "-q", "--filter", "dangling=true")).split())
    assert made <= set(ok(skiff("volume", "prune", "-f")).split())
    assert not made & set(ok(skiff("volume", "ls", "-q")).split())


def test_bad_mount_options_are_refused(skiff) -> None:
    for args, message in [
        (["-v", "rel:dir"], "mount path must be absolute"),
        (["-v", "/a:/b:xx"], "invalid mode: xx"),
        (["-v", "bad$name:/b"], "includes invalid characters"),
        (["--mount", "type=tmpfs,source=x,target=/t"], "field Source must not be specified"),
        (["--mount", "type=volume,target=/t,bind-propagation=shared"], "field BindOptions must not be specified"),
        (["--mount", "type=bind,target=/t"], "field Source must not be empty"),
        (["-v", "/tmp:/x", "-v", "/tmp:/x"], "Duplicate mount point: /x"),
        (["--mount", "target=/t,bogus=1"], "unexpected key 'bogus'"),
    ]:
        r = skiff("run", "--rm", *args, "busybox", "true")
        assert r.returncode == 125, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)


def test_a_symlink_in_the_image_cannot_point_a_mount_at_the_host(skiff, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ok(skiff("run", "--name", "evil", "busybox", "ln", "-s", str(outside), "/escape"))
    try:
        ok(skiff("commit", "evil", "evil:1"))
    finally:
        ok(skiff("rm", "evil"))
    try:
        ok(skiff("run", "--rm", "-v", "/escape", "--mount", "type=tmpfs,target=/escape/t", "evil:1",
                 "sh", "-c", "touch /escape/x /escape/t/y"))
        # A relative link made by the container itself (in its writable layer), used at the next start.
        ok(skiff("run", "--name", "evil2", "--mount", "type=tmpfs,target=/a/b/t", "busybox", "sh", "-c",
                 f"mv /a /a.old && mkdir /a && ln -s ../../../../../../../../../..{outside} /a/b"))
        ok(skiff("start", "-a", "evil2"))
        assert list(outside.iterdir()) == []
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        assert not any(line.split()[4].startswith(str(outside)) for line in mountinfo)
    finally:
        skiff("rm", "-f", "evil2")
        skiff("rmi", "evil:1")
    ok(skiff("volume", "prune", "-f"))


def test_propagation_rslave_sees_a_later_host_mount(skiff, tmp_path: Path) -> None:
    src = tmp_path / "prop"
    src.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        (src / "sub").mkdir()
        ok(skiff("run", "-d", "--name", "prop", "-v", f"{src}:/p:rslave", "busybox", "sleep", "60"))
        try:
            subprocess.run(["mount", "-t", "tmpfs", "late", str(src / "sub")], check=True)
            try:
                out = ok(skiff("exec", "prop", "grep", " /p/sub ", "/proc/mounts"))
                assert out.split()[0] == "late"
            finally:
                subprocess.run(["umount", str(src / "sub")], check=True)
        finally:
            skiff("rm", "-f", "prop")
    finally:
        subprocess.run(["umount", "-l", str(src)], check=True)


def test_volumes_from_another_container(skiff, tmp_path: Path) -> None:
    ok(skiff("create", "--name", "vf-src", "-v", "/anon", "-v", f"{tmp_path}:/host", "--tmpfs", "/t",
             "busybox", "true"))
    try:
        anon = next(m["Name"] for m in json.loads(ok(skiff("inspect", "vf-src")))[0]["Mounts"]
                    if m["Destination"] == "/anon")
        ok(skiff("run", "--rm", "--volumes-from", "vf-src", "busybox", "sh", "-c",
                 "echo a > /anon/f; echo b > /host/g"))
        out = ok(skiff("run", "--rm", "--volumes-from", "vf-src:ro", "busybox", "sh", "-c",
                       "cat /anon/f /host/g; touch /anon/x 2>/dev/null || echo ro"))
        assert out.split() == ["a", "b", "ro"]
        assert (tmp_path / "g").read_text() == "b\n"
        r = skiff("run", "--rm", "--volumes-from", "nosuch", "busybox", "true")
        assert r.returncode == 125 and "No such container" in r.stderr
    finally:
        ok(skiff("rm", "-v", "vf-src"))
    assert anon not in ok(skiff("volume", "ls", "-q")).split()
