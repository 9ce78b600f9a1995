"""Pull, push and tag against a real registry (Debian's ``docker-registry``) on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import registries


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registries.need_tools("skopeo")
    with registries.serve(tmp_path_factory.mktemp("registry")) as host:
        yield host


def test_push_pull_run(skiff, registry: str) -> None:
    ref = f"{registry}/bb:1"
    skiff("tag", "busybox:latest", ref, check=True)
    out = skiff("push", ref, check=True).stdout
    assert f"The push refers to repository [{registry}/bb]" in out
    assert "Pushed" in out and "1: digest: sha256:" in out
    inspected = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], check=True, capture_output=True,
        text=True).stdout)
    assert len(inspected["Layers"]) == 1
    # Pushing again sends nothing.
    assert "Layer already exists" in skiff("push", ref, check=True).stdout

    # Remove busybox too so that the layer really is downloaded; busybox:latest comes back
    # below with the very same id, since the config round-trips byte for byte.
    image_id = skiff("inspect", "-f", "{{.Id}}", "busybox:latest", check=True).stdout.strip()
    skiff("rmi", ref, "busybox:latest", check=True)
    start = time.monotonic()
    pulled = skiff("pull", ref, check=True)
    elapsed = time.monotonic() - start
    skiff("tag", ref, "busybox:latest", check=True)
    print(f"\npull of the busybox image from the local registry: {elapsed:.2f} s")
    assert "Pulling fs layer" in pulled.stdout and "Pull complete" in pulled.stdout, pulled.stdout
    assert skiff("inspect", "-f", "{{.Id}}", "busybox:latest", check=True).stdout.strip() == image_id
    assert "Digest: sha256:" in pulled.stdout
    assert pulled.stdout.rstrip().endswith(ref)
    digest = next(ln for ln in pulled.stdout.splitlines() if ln.startswith("Digest: ")).split()[1]
    assert digest == inspected["Digest"]
    # Same image id as the one pushed: the config went up and came back byte for byte.
    ids = {skiff("inspect", "-f", "{{.Id}}", r, check=True).stdout.strip() for r in ("busybox:latest", ref)}
    assert len(ids) == 1

    again = skiff("pull", ref, check=True).stdout
    assert f"Status: Image is up to date for {ref}" in again

    run = skiff("run", "--rm", ref, "cat", "/etc/motd", check=True)
    assert run.returncode == 0

    by_digest = skiff("pull", f"{registry}/bb@{digest}", check=True).stdout
    assert "Image is up to date" in by_digest
    assert skiff("run", "--rm", f"{registry}/bb@{digest}", "true").returncode == 0


def test_pull_two_layers_with_whiteout(skiff, registry: str, busybox_tar: Path, tmp_path: Path) -> None:
    upper = registries.layer_tar([("etc/", None), ("etc/.wh.motd", b""), ("hello.txt", b"from the upper layer\n")])
    # A base layer of its own (busybox plus one file), so that it is downloaded, not found.
    base = registries.busybox_layer(busybox_tar, b"two")
    registries.oci_layout(tmp_path / "oci", [base, upper], "2")
    registries.copy_to(tmp_path / "oci", "2", f"{registry}/two:2")
    ref = f"{registry}/two:2"
    # Not present: run pulls it first, as the Docker CLI does.
    run = skiff("run", "--rm", ref, "sh", "-c", "cat /hello.txt; test -e /etc/motd && echo motd-visible; true")
    assert run.returncode == 0, run.stderr
    assert f"Unable to find image '{ref}' locally" in run.stderr
    assert "from the upper layer" in run.stdout
    assert run.stderr.count("Pull complete") == 2, run.stderr
    assert "motd-visible" not in run.stdout
    out = skiff("pull", ref, check=True).stdout
    assert "Image is up to date" in out
    skiff("rmi", ref, check=True)


def test_pull_errors(skiff, registry: str) -> None:
    missing = skiff("pull", f"{registry}/nope:1")
    assert missing.returncode != 0
    assert "not found" in missing.stderr.lower()
    assert skiff("tag", "no-such-image", "x:1").returncode != 0


def test_run_pull_policies(skiff, registry: str) -> None:
    """`run --pull never|missing|always` (and -q), against a real registry on 127.0.0.1."""
    ref = f"{registry}/pullpolicy:1"
    skiff("tag", "busybox:latest", ref, check=True)
    skiff("push", ref, check=True)
    skiff("rmi", ref, check=True)
    src = ""
    try:
        never = skiff("run", "--rm", "--pull", "never", ref, "true")
        assert never.returncode == 125 and "No such image" in never.stderr, never.stderr
        quiet = skiff("run", "--rm", "-q", ref, "true")  # missing: pulled, without progress
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        # The registry's tag moves on to a new image; the local tag stays on the old one.
        src = skiff("run", "-d", "busybox", "sh", "-c", "echo v2 > /marker", check=True).stdout.strip()
        skiff("wait", src, check=True)
        skiff("commit", src, ref, check=True)
        skiff("push", ref, check=True)
        skiff("tag", "busybox:latest", ref, check=True)
        assert skiff("run", "--rm", ref, "cat", "/marker").returncode != 0  # the local, old image
        always = skiff("run", "--rm", "--pull", "always", ref, "cat", "/marker")
        assert always.returncode == 0 and always.stdout == "v2\n", always.stderr
        assert "Pull complete" in always.stderr or "Downloaded newer image" in always.stderr, always.stderr
    finally:
        if src:
            skiff("rm", "-f", src)
        skiff("rmi", "-f", ref)
