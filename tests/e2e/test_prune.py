"""`container prune`, `system prune` and the management-command names (`container ls`, `image rm` ...)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from tests.e2e.conftest import start_engine, stop_engine


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout


def test_container_prune_removes_stopped_containers_the_filters_keep(skiff) -> None:
    tag = uuid.uuid4().hex[:8]
    old = ok(skiff("create", "--label", f"prune={tag}", "--label", "keep=no", "busybox", "true")).strip()
    time.sleep(1.1)  # `until` has second resolution in the filter below
    cutoff = str(int(time.time()))
    new = ok(skiff("create", "--label", f"prune={tag}", "busybox", "true")).strip()
    kept = ok(skiff("create", "--label", f"prune={tag}", "--label", "keep=yes", "busybox", "true")).strip()
    running = ok(skiff("run", "-d", "--label", f"prune={tag}", "busybox", "sleep", "60")).strip()
    try:
        out = ok(skiff("container", "prune", "-f", "--filter", f"label=prune={tag}", "--filter", f"until={cutoff}"))
        assert out.splitlines()[:2] == ["Deleted Containers:", old] and "Total reclaimed space:" in out
        out = ok(skiff("container", "prune", "-f", "--filter", f"label=prune={tag}", "--filter", "label!=keep=yes"))
        assert new in out and kept not in out and running not in out
        left = set(ok(skiff("container", "ls", "-aq", "--no-trunc", "--filter", f"label=prune={tag}")).split())
        assert left == {kept, running}
        # without -f it asks, and "n" keeps everything
        r = skiff("container", "prune", "--filter", f"label=prune={tag}", input=b"n\n")
        assert r.returncode == 0 and "Are you sure" in r.stdout
        assert kept in ok(skiff("ps", "-aq", "--no-trunc"))
        bad = skiff("container", "prune", "-f", "--filter", "colour=red")
        assert bad.returncode != 0 and "invalid filter" in bad.stderr
    finally:
        skiff("rm", "-f", old, new, kept, running)


def test_management_command_names(skiff) -> None:
    cid = ok(skiff("container", "create", "--name", f"mgmt-{uuid.uuid4().hex[:6]}", "busybox", "true")).strip()
    try:
        assert cid[:12] in ok(skiff("container", "list", "-a", "-q"))
        assert ok(skiff("container", "inspect", "-f", "{{.Id}}", cid)).strip() == cid
        assert "busybox" in ok(skiff("image", "ls"))
        ok(skiff("image", "tag", "busybox", "mgmt-tag:1"))
        assert "Untagged: mgmt-tag:1" in ok(skiff("image", "rm", "mgmt-tag:1"))
        r = skiff("container", "nope")
        assert r.returncode == 2 and "'container nope' is not a skiff command" in r.stderr
    finally:
        ok(skiff("container", "rm", cid))


def test_system_prune(tmp_path_factory, busybox_tar: Path, engine) -> None:
    """On an engine of its own: everything unused goes, what is in use or tagged stays."""
    base = tmp_path_factory.mktemp("skiff-prune")
    eng = start_engine(base, busybox_tar, env={"SKIFF_BRIDGE": f"skp{os.getpid() % 1000000}",
                                               "SKIFF_CGROUP_PARENT": f"skiff-prune-{os.getpid()}"})
    sk = eng.skiff
    try:
        stopped = ok(sk("create", "busybox", "true")).strip()
        ok(sk("network", "create", "unused-net"))
        ok(sk("network", "create", "used-net"))
        running = ok(sk("run", "-d", "--network", "used-net", "-v", "/anon", "busybox", "sleep", "60")).strip()
        ok(sk("run", "--name", "anonvol", "-v", "/gone", "busybox", "true"))
        ok(sk("volume", "create", "named"))
        r = sk("system", "prune", input=b"n\n")
        assert r.returncode == 0 and "all stopped containers" in r.stdout and stopped in ok(sk("ps", "-aq",
                                                                                             "--no-trunc"))
        out = ok(sk("system", "prune", "-f", "--volumes"))
        assert stopped in out and "unused-net" in out and "Total reclaimed space:" in out
        assert "used-net" not in out.replace("unused-net", "")
        assert set(ok(sk("ps", "-aq", "--no-trunc")).split()) == {running}
        nets = ok(sk("network", "ls", "--format", "{{.Name}}")).split()
        assert "used-net" in nets and "unused-net" not in nets
        vols = ok(sk("volume", "ls", "-q")).split()
        assert "named" in vols and len(vols) == 2  # the running container's anonymous volume stays
        assert "busybox" in ok(sk("images"))  # tagged: not dangling
    finally:
        stop_engine(eng, base)


def test_prune_filters_for_images_networks_volumes_and_system(tmp_path_factory, busybox_tar: Path, engine) -> None:
    """`image|network|volume|system prune --filter` (until, label, label!), on an engine of its own."""
    base = tmp_path_factory.mktemp("skiff-prunef")
    eng = start_engine(base, busybox_tar, env={"SKIFF_BRIDGE": f"skf{os.getpid() % 1000000}",
                                               "SKIFF_CGROUP_PARENT": f"skiff-prunef-{os.getpid()}"})
    sk = eng.skiff
    try:
        src = ok(sk("create", "busybox", "true")).strip()

        def image(ref: str, *labels: str) -> str:
            changes = [a for lab in labels for a in ("--change", f"LABEL {lab}")]
            return ok(sk("commit", *changes, src, ref)).strip()

        def made(what: str, *args: str) -> None:
            ok(sk(what, "create", *args))

        image("old:1", "prune=t")
        made("network", "--label", "prune=t", "n-old")
        time.sleep(1.1)  # `until` below has second resolution
        cutoff = str(int(time.time()))
        image("new:1", "prune=t")
        image("kept:1", "prune=t", "keep=yes")
        image("other:1")
        made("network", "--label", "prune=t", "n-new")
        made("network", "--label", "prune=t", "--label", "keep=yes", "n-kept")
        made("network", "n-other")
        ok(sk("rm", src))

        out = ok(sk("image", "prune", "-a", "-f", "--filter", "label=prune=t", "--filter", f"until={cutoff}"))
        assert "untagged: old:1" in out and "new:1" not in out and "Total reclaimed space:" in out, out
        out = ok(sk("image", "prune", "-a", "-f", "--filter", "label=prune=t", "--filter", "label!=keep=yes"))
        assert "untagged: new:1" in out and "kept:1" not in out and "other:1" not in out, out
        tags = ok(sk("images", "--format", "{{.Repository}}:{{.Tag}}")).split()
        assert {"kept:1", "other:1"} <= set(tags) and not {"old:1", "new:1"} & set(tags), tags
        assert any(t.startswith("busybox") for t in tags)

        out = ok(sk("network", "prune", "-f", "--filter", "label=prune=t", "--filter", f"until={cutoff}"))
        assert out.split() == ["Deleted", "Networks:", "n-old"], out
        out = ok(sk("network", "prune", "-f", "--filter", "label=prune=t", "--filter", "label!=keep=yes"))
        assert out.split() == ["Deleted", "Networks:", "n-new"], out
        nets = ok(sk("network", "ls", "--format", "{{.Name}}")).split()
        assert "n-kept" in nets and "n-other" in nets

        made("volume", "--label", "prune=t", "v-a")
        made("volume", "--label", "prune=t", "--label", "keep=yes", "v-b")
        out = ok(sk("volume", "prune", "-f", "--filter", "all=true", "--filter", "label=prune=t",
                    "--filter", "label!=keep=yes"))
        assert "v-a" in out and "v-b" not in out, out
        assert sorted(ok(sk("volume", "ls", "-q")).split()) == ["v-b"]

        for cmd in (["image", "prune", "-f"], ["network", "prune", "-f"], ["volume", "prune", "-f"]):
            bad = sk(*cmd, "--filter", "colour=red")
            assert bad.returncode != 0 and "invalid filter 'colour'" in bad.stderr, (cmd, bad.stderr)
        src = ok(sk("create", "busybox", "true")).strip()
        image("dang:1", "dang=t")
        ok(sk("rm", src))
        out = ok(sk("image", "prune", "-f", "--filter", "dangling=false", "--filter", "label=dang=t"))
        assert "untagged: dang:1" in out and "kept:1" not in out, out  # dangling=false: as -a
        bad = sk("image", "prune", "-f", "--filter", "dangling=maybe")
        assert bad.returncode != 0 and "invalid filter 'dangling=maybe'" in bad.stderr
        bad = sk("image", "prune", "-f", "--filter", "until=someday")
        assert bad.returncode != 0 and "failed to parse value as time or duration" in bad.stderr
        bad = sk("volume", "prune", "-f", "--filter", "until=1h")
        assert bad.returncode != 0 and "invalid filter 'until'" in bad.stderr

        # system prune: the same filters for containers, networks and images (volumes: label only)
        bad = sk("system", "prune", "-f", "--volumes", "--filter", "until=1h")
        assert bad.returncode != 0 and 'The "until" filter is not supported with "--volumes"' in bad.stderr
        src = ok(sk("create", "busybox", "true")).strip()
        image("sys:1", "sys=t")
        ok(sk("rm", src))
        c_sys = ok(sk("create", "--label", "sys=t", "busybox", "true")).strip()
        c_plain = ok(sk("create", "busybox", "true")).strip()
        made("network", "--label", "sys=t", "n-sys")
        out = ok(sk("system", "prune", "-a", "-f", "--filter", "label=sys=t"))
        assert c_sys in out and "n-sys" in out and "untagged: sys:1" in out, out
        assert c_plain not in out and "n-other" not in out and "kept:1" not in out and "busybox" not in out, out
        assert set(ok(sk("ps", "-aq", "--no-trunc")).split()) == {c_plain}
        assert "n-other" in ok(sk("network", "ls", "--format", "{{.Name}}"))
    finally:
        stop_engine(eng, base)
