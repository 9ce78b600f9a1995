"""Pull, push and tag against a real registry (Debian's ``docker-registry``) on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REGISTRY_BIN = shutil.which("docker-registry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REGISTRY_BIN is None or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed")
    base = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    log = open(base / "registry.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(base / 'registry.log').read_text()}")
                time.sleep(0.1)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    """A layer tar: (path, content) for files, (path, None) for directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _oci_layout(root: Path, layers: list[bytes], tag: str) -> None:
    """A minimal OCI image layout with gzip layers, for skopeo to copy to the registry."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd, len(data)

    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        digest, size = put(gzip.compress(raw, mtime=0))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": [{}, {}]}
    cdigest, csize = put(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                           "size": csize}, "layers": descs}
    mdigest, msize = put(json.dumps(manifest).encode())
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


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
    upper = _tar([("etc/", None), ("etc/.wh.motd", b""), ("hello.txt", b"from the upper layer\n")])
    # A base layer of its own (busybox plus one file), so that it is downloaded, not found.
    buf = io.BytesIO()
    with tarfile.open(busybox_tar) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        marker = tarfile.TarInfo("base-marker")
        marker.size = 3
        dst.addfile(marker, io.BytesIO(b"two"))
    base = buf.getvalue()
    _oci_layout(tmp_path / "oci", [base, upper], "2")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'oci'}:2",
                    f"docker://{registry}/two:2"], check=True, capture_output=True)
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
