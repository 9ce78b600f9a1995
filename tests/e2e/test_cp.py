"""``skiff cp`` in both directions, for running and stopped containers, checked inside and outside."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data").write_bytes(b"\x00\x01payload" * 1000)
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(src / "run.sh", 0o751)
    os.chmod(src / "sub", 0o710)
    os.chown(src / "sub" / "data", 1234, 4321)
    os.symlink("sub/data", src / "link")
    return src


@pytest.mark.parametrize("running", [True, False])
def test_round_trip_keeps_modes_owners_and_links(skiff, tree: Path, tmp_path: Path, running: bool) -> None:
    name = f"cp-{'up' if running else 'down'}"
    if running:
        ok(skiff("run", "-d", "--name", name, "busybox", "sleep", "120"))
    else:
        ok(skiff("create", "--name", name, "busybox", "sleep", "120"))
    try:
        ok(skiff("cp", "-a", str(tree), f"{name}:/srv"))  # /srv is missing: copied *as* /srv
        ok(skiff("cp", str(tree / "run.sh"), f"{name}:/tmp/"))  # without -a: root-owned
        if not running:
            ok(skiff("start", name))
        out = ok(skiff("exec", name, "sh", "-c",
                       "stat -c '%a %u:%g %n' /srv/sub /srv/sub/data /srv/run.sh /tmp/run.sh; readlink /srv/link;"
                       " /srv/run.sh; md5sum /srv/sub/data"))
        lines = out.splitlines()
        assert lines[:6] == ["710 0:0 /srv/sub", "644 1234:4321 /srv/sub/data", "751 0:0 /srv/run.sh",
                             "751 0:0 /tmp/run.sh", "sub/data", "ran"]
        back = tmp_path / "back"
        ok(skiff("cp", "-a", f"{name}:/srv", str(back)))  # missing on the host: copied as back
        assert (back / "sub" / "data").read_bytes() == (tree / "sub" / "data").read_bytes()
        assert oct((back / "run.sh").stat().st_mode & 0o7777) == "0o751"
        assert (back / "sub" / "data").stat().st_uid == 1234
        assert os.readlink(back / "link") == "sub/data"
        # contents only, into an existing directory
        into = tmp_path / "into"
        into.mkdir()
        ok(skiff("cp", f"{name}:/srv/.", str(into)))
        assert sorted(p.name for p in into.iterdir()) == ["link", "run.sh", "sub"]
    finally:
        skiff("rm", "-f", name)


def test_tar_on_stdin_and_stdout(skiff) -> None:
    ok(skiff("create", "--name", "cp-tar", "busybox", "true"))
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            ti = tarfile.TarInfo("hello.txt")
            ti.size, ti.mode = 3, 0o600
            tf.addfile(ti, io.BytesIO(b"hey"))
        ok(skiff("cp", "-", "cp-tar:/root", input=buf.getvalue()))
        env = dict(os.environ, SKIFF_HOST=skiff.__self__.host)
        raw = subprocess.run([str(Path(sys.executable).parent / "skiff"), "cp", "cp-tar:/root/hello.txt", "-"],
                             capture_output=True, env=env, timeout=60, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            members = tf.getmembers()
            assert [(m.name, m.mode) for m in members] == [("hello.txt", 0o600)]
            assert tf.extractfile(members[0]).read() == b"hey"
    finally:
        skiff("rm", "cp-tar")


def test_cp_honours_volumes_and_read_only(skiff, tmp_path: Path) -> None:
    host = tmp_path / "bind"
    host.mkdir()
    ok(skiff("create", "--name", "cp-vol", "-v", f"{host}:/b", "-v", "cpvol:/v", "-v", f"{tmp_path}:/ro:ro",
             "busybox", "true"))
    try:
        f = tmp_path / "f.txt"
        f.write_text("via cp\n")
        ok(skiff("cp", str(f), "cp-vol:/b/"))
        ok(skiff("cp", str(f), "cp-vol:/v/"))
        assert (host / "f.txt").read_text() == "via cp\n"
        assert ok(skiff("run", "--rm", "-v", "cpvol:/x", "busybox", "cat", "/x/f.txt")) == "via cp\n"
        r = skiff("cp", str(f), "cp-vol:/ro/new.txt")
        assert r.returncode != 0 and "read-only" in r.stderr
        assert not (tmp_path / "new.txt").exists()
    finally:
        skiff("rm", "-v", "cp-vol")
        skiff("volume", "rm", "cpvol")


def test_cp_never_follows_a_link_out_of_the_container(skiff, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    target = tmp_path / "target"
    target.mkdir()
    ok(skiff("run", "-d", "--name", "cp-evil", "busybox", "sh", "-c",
             f"mkdir -p {target} && ln -s {secret} /leak && ln -s ../../../../../../../..{target} /out"
             " && ln -s /etc /etc2 && sleep 120"))
    try:
        # reading: the link resolves inside the container, where the host's file does not exist
        r = skiff("cp", "cp-evil:/leak/", str(tmp_path / "got"))
        assert r.returncode != 0
        assert not (tmp_path / "got").exists()
        ok(skiff("cp", "cp-evil:/leak", str(tmp_path / "got")))  # the link itself, as Docker
        assert os.readlink(tmp_path / "got") == str(secret)
        r = skiff("cp", "-L", "cp-evil:/leak", str(tmp_path / "got2"))  # -L: followed, inside the container
        assert r.returncode != 0 and not (tmp_path / "got2").exists()
        ok(skiff("cp", "-L", "cp-evil:/etc2", str(tmp_path / "etc-copy")))
        assert (tmp_path / "etc-copy" / "passwd").read_text().startswith("root:")
        # writing: through a relative link that climbs out, and into /etc via a link to /etc
        f = tmp_path / "payload"
        f.write_text("x\n")
        ok(skiff("cp", str(f), "cp-evil:/out/"))
        assert list(target.iterdir()) == []
        assert "payload" in ok(skiff("exec", "cp-evil", "ls", str(target)))
        ok(skiff("cp", str(f), "cp-evil:/etc2/"))
        assert ok(skiff("exec", "cp-evil", "cat", "/etc/payload")) == "x\n"
        assert not Path("/etc/payload").exists()
    finally:
        skiff("rm", "-f", "cp-evil")


def test_cp_errors(skiff, tmp_path: Path) -> None:
    ok(skiff("create", "--name", "cp-err", "busybox", "true"))
    try:
        r = skiff("cp", "cp-err:/nope", str(tmp_path / "x"))
        assert r.returncode == 1 and "Could not find the file /nope" in r.stderr
        r = skiff("cp", "nosuch:/etc", str(tmp_path / "x"))
        assert r.returncode == 1 and "No such container" in r.stderr
        r = skiff("cp", str(tmp_path), "cp-err:/etc/passwd")
        assert r.returncode == 1 and "cannot copy directory to file" in r.stderr
        r = skiff("cp", "a", "b")
        assert r.returncode != 0 and "must specify at least one container source" in r.stderr
    finally:
        skiff("rm", "cp-err")


def _helpers(exec_root: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"cp_helper[.]py .*{exec_root}/"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_cp_cut_by_an_execsvc_sigkill_leaves_nothing(engine, skiff, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20) * 48)
    ok(skiff("create", "--name", "cp-kill", "-v", "cpkill:/data", "busybox", "true"))
    try:
        ok(skiff("cp", str(big), "cp-kill:/data/big"))
        env = dict(os.environ, SKIFF_HOST=engine.host)
        reader = subprocess.Popen([str(Path(sys.executable).parent / "skiff"), "cp", "cp-kill:/data/big", "-"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            assert reader.stdout is not None and len(reader.stdout.read(65536)) == 65536  # streaming, then stalled
            helpers = _helpers(engine.exec_root)
            assert len(helpers) == 1  # a stopped container: the helper holds the mounts in its own namespace
            os.kill(engine.service_pid("execsvc"), 9)
            deadline = time.monotonic() + 30
            while _helpers(engine.exec_root) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _helpers(engine.exec_root) == []  # died with execsvc (PR_SET_PDEATHSIG)
        finally:
            reader.kill()
            reader.wait()
        # execsvc is back (skiffd restarts it): the copy works again and the container starts
        deadline = time.monotonic() + 30
        while skiff("cp", "cp-kill:/data/big", str(tmp_path / "again")).returncode != 0:
            assert time.monotonic() < deadline, "cp did not work again after execsvc came back"
            time.sleep(0.2)
        assert (tmp_path / "again").read_bytes() == big.read_bytes()
        assert list((engine.exec_root / "cp").iterdir()) == []
        ok(skiff("start", "-a", "cp-kill"))
    finally:
        skiff("rm", "-v", "cp-kill")
        skiff("volume", "rm", "cpkill")
