"""commit, diff, export, save, load, history, image prune through the CLI; interop with skopeo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import VENV_BIN
from tests.e2e.test_registry import registry  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e


def _load(engine, path: Path) -> subprocess.CompletedProcess[str]:
    """``skiff load`` with the archive on stdin (the helper's input is text)."""
    with open(path, "rb") as f:
        return subprocess.run([str(VENV_BIN / "skiff"), "load"], stdin=f, capture_output=True, text=True,
                              env=dict(os.environ, SKIFF_HOST=engine.host), timeout=120)


def test_commit_diff_export_save_load(engine, skiff, tmp_path: Path) -> None:
    name = "snap-src"
    skiff("run", "--name", name, "busybox",
          "sh", "-c", "echo hi > /hello.txt && rm /etc/motd && mkdir -p /var/new && echo x > /etc/extra",
          check=True, timeout=120)
    try:
        diff = skiff("diff", name, check=True).stdout.splitlines()
        assert diff == ["C /etc", "A /etc/extra", "D /etc/motd", "A /hello.txt", "C /var", "A /var/new"]

        out = tmp_path / "export.tar"
        skiff("export", "-o", str(out), name, check=True)
        with tarfile.open(out) as tf:
            names = set(tf.getnames())
            hello = tf.extractfile("hello.txt")
            assert hello is not None and hello.read() == b"hi\n"
        assert "etc/motd" not in names and "bin/busybox" in names and "etc/passwd" in names

        image_id = skiff("commit", "-m", "a snapshot", "-a", "tester", "-c", "ENV FOO=bar", name, "snap:1",
                         check=True).stdout.strip()
        assert image_id.startswith("sha256:")
        ran = skiff("run", "--rm", "snap:1", "sh", "-c",
                    "cat /hello.txt; test -e /etc/motd && echo motd-present || echo motd-gone; echo $FOO",
                    check=True, timeout=120).stdout.split()
        assert ran == ["hi", "motd-gone", "bar"]

        history = skiff("history", "snap:1", check=True).stdout.splitlines()
        assert history[0].split()[:4] == ["IMAGE", "CREATED", "CREATED", "BY"]
        assert history[1].startswith(image_id[7:19]) and "a snapshot" in history[1]
        assert len(history) == 3

        saved = tmp_path / "snap.tar"
        skiff("save", "-o", str(saved), "snap:1", check=True)
        with tarfile.open(saved) as tf:
            names = set(tf.getnames())
        assert {"manifest.json", "index.json", "oci-layout"} <= names
        skiff("rm", name, check=True)
        skiff("rmi", "snap:1", check=True)
        assert skiff("inspect", "snap:1").returncode != 0
        loaded = _load(engine, saved)
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip() == "Loaded image: snap:1"
        assert skiff("inspect", "-f", "{{.Id}}", "snap:1", check=True).stdout.strip() == image_id
        assert skiff("run", "--rm", "snap:1", "cat", "/hello.txt", check=True, timeout=120).stdout == "hi\n"
    finally:
        skiff("rm", "-f", name)
        skiff("rmi", "snap:1")


def test_commit_changes_stopsignal_and_label(skiff) -> None:
    """`commit --change STOPSIGNAL/LABEL`: a container of the new image is stopped with that signal."""
    src, image = "stopsig-src", "stopsig:1"
    trap = "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done"
    skiff("create", "--name", src, "busybox", "true", check=True)
    cid = ""
    try:
        skiff("commit", "-c", "STOPSIGNAL SIGUSR1", "-c", "LABEL tier=test", src, image, check=True)
        assert skiff("inspect", "-f", "{{.Config.StopSignal}}", image, check=True).stdout.strip() == "SIGUSR1"
        bad = skiff("commit", "-c", "STOPSIGNAL NOPE", src, "stopsig:bad")
        assert bad.returncode != 0 and "invalid signal" in bad.stderr, bad.stderr
        assert skiff("inspect", "stopsig:bad").returncode != 0  # nothing half-made
        cid = skiff("run", "-d", image, "sh", "-c", trap, check=True, timeout=120).stdout.strip()
        assert skiff("inspect", "-f", "{{.Config.Labels.tier}}", cid, check=True).stdout.strip() == "test"
        deadline = time.monotonic() + 30
        while "ready" not in skiff("logs", cid).stdout:  # the trap is set
            assert time.monotonic() < deadline
            time.sleep(0.1)
        skiff("stop", "-t", "30", cid, check=True)
        assert skiff("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "3"
        assert "got-usr1" in skiff("logs", cid).stdout
    finally:
        if cid:
            skiff("rm", "-f", cid)
        skiff("rm", "-f", src)
        skiff("rmi", image)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is needed")
def test_skopeo_reads_saved_archives_and_oci_layouts_load(engine, skiff, tmp_path: Path) -> None:
    saved = tmp_path / "bb.tar"
    skiff("save", "-o", str(saved), "busybox:latest", check=True)
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{saved}"], check=True,
                                          capture_output=True, text=True).stdout)
    image_id = skiff("inspect", "-f", "{{.Id}}", "busybox:latest", check=True).stdout.strip()
    assert len(inspected["Layers"]) == 1
    oci = tmp_path / "oci"
    subprocess.run(["skopeo", "copy", f"docker-archive:{saved}", f"oci:{oci}:bb"], check=True, capture_output=True)
    # skopeo's layout (gzip layers) loads, as a tar of the layout directory.
    layout_tar = tmp_path / "oci.tar"
    with tarfile.open(layout_tar, "w") as tf:
        for entry in sorted(oci.iterdir()):
            tf.add(entry, arcname=entry.name)
    loaded = _load(engine, layout_tar)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("Loaded image ID: sha256:")
    new_id = loaded.stdout.split()[-1]
    try:
        assert skiff("run", "--rm", new_id, "echo", "from-oci", check=True, timeout=120).stdout == "from-oci\n"
    finally:
        if new_id != image_id:
            skiff("rmi", new_id)


def test_image_prune_removes_dangling(skiff, tmp_path: Path) -> None:
    skiff("tag", "busybox:latest", "keep:me", check=True)
    out = skiff("image", "prune", "-f", check=True).stdout
    assert "Total reclaimed space:" in out
    assert skiff("inspect", "keep:me").returncode == 0
    skiff("rmi", "keep:me", check=True)


def test_images_filters_digests_and_df(skiff) -> None:
    skiff("tag", "busybox:latest", "filtered:one", check=True)
    try:
        out = skiff("images", "--filter", "reference=filtered", check=True).stdout.splitlines()
        assert len(out) == 2 and out[1].split()[:2] == ["filtered", "one"]
        assert skiff("images", "-q", "--filter", "dangling=true", check=True).stdout == ""
        assert skiff("images", "--filter", "bogus=1").returncode == 1
        digests = skiff("images", "--digests", "--filter", "reference=filtered:*", check=True).stdout.splitlines()
        assert digests[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"] and digests[1].split()[2] == "<none>"
        df = skiff("system", "df", check=True).stdout.splitlines()
        assert df[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"] and df[1].startswith("Images")
    finally:
        skiff("rmi", "filtered:one")


def test_login_logout(engine, registry: str, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    env = dict(os.environ, SKIFF_HOST=engine.host, SKIFF_CONFIG=str(tmp_path / "cfg"))
    cmd = [str(VENV_BIN / "skiff")]
    out = subprocess.run([*cmd, "login", "-u", "me", "--password-stdin", registry], input="secret\n",
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Login Succeeded"
    config = tmp_path / "cfg" / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert registry in json.loads(config.read_text())["auths"]
    out = subprocess.run([*cmd, "logout", registry], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == f"Removing login credentials for {registry}"
    assert registry not in json.loads(config.read_text())["auths"]
    bad = subprocess.run([*cmd, "login", "-u", "me", "--password-stdin", "127.0.0.1:1"], input="x\n",
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "Error response from daemon" in bad.stderr
