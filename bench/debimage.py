"""The ~200 MB Debian image of scenario 4, built once and cached under build/.

    debootstrap --variant=minbase <codename> <rootfs> <mirror>

The mirror and the codename come from the machine's own apt configuration
(/etc/apt/sources.list and /etc/apt/sources.list.d/*.list|*.sources, one-line or
deb822 form), so no host name is written anywhere. The root file system becomes one
gzip layer (without /dev's device nodes: the engine makes /dev at run time, and Docker's own
Debian images ship /dev empty) of an OCI image layout at build/debian-minbase-oci (tag ``bench``), which
skopeo pushes to the benchmark's local registry at each run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

TAG = "bench"


def codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no VERSION_CODENAME in /etc/os-release")


def apt_sources(etc: Path = Path("/etc/apt")) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` source apt is configured with."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    out: list[tuple[str, list[str]]] = []
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.name.endswith(".list") or f.name == "sources.list":
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
                    while words and not words[0].endswith("]"):
                        words = words[1:]
                    words = words[1:]
                if len(words) >= 2:
                    out.append((words[0], [words[1]]))
        elif f.name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith((" ", "\t", "#")):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    out.append((uri, fields.get("suites", "").split()))
    return out


def mirror(suite: str, etc: Path = Path("/etc/apt")) -> str:
    for uri, suites in apt_sources(etc):
        if suite in suites:
            return uri
    raise RuntimeError(f"no apt source for {suite} in /etc/apt/sources.list*")


def ensure_debootstrap() -> None:
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def build(dest: Path, log=print) -> Path:  # type: ignore[no-untyped-def]
    """An OCI layout at ``dest`` (made once; reused when it is there)."""
    if (dest / "index.json").is_file():
        return dest
    ensure_debootstrap()
    suite = codename()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debimage-", dir=dest.parent))
    try:
        rootfs = work / "rootfs"
        log(f"bench: debootstrap --variant=minbase {suite} (once; cached in {dest})")
        t0 = time.monotonic()
        subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror(suite)], check=True,
                       stdout=subprocess.DEVNULL)
        # No device nodes (debootstrap makes /dev/null & co.; the engine makes /dev at run time,
        # and Docker's own Debian images ship /dev empty too), no package caches.
        for node in (rootfs / "dev").iterdir():
            if node.is_dir() and not node.is_symlink():
                shutil.rmtree(node)
            else:
                node.unlink()
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        layer = work / "layer.tar"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(rootfs), "-cf", str(layer),
                        "."], check=True)
        layout = work / "oci"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes) -> tuple[str, int]:
            hexd = hashlib.sha256(data).hexdigest()
            (blobs / hexd).write_bytes(data)
            return "sha256:" + hexd, len(data)

        raw = layer.read_bytes()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        ldigest, lsize = put(gzip.compress(raw, compresslevel=6, mtime=0))
        del raw
        config = {"architecture": "amd64", "os": "linux",
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                             "Cmd": ["bash"]},
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "history": [{"created_by": f"debootstrap --variant=minbase {suite}"}]}
        cdigest, csize = put(json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                               "size": csize},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldigest,
                                "size": lsize}]}
        mdigest, msize = put(json.dumps(manifest).encode())
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
             "annotations": {"org.opencontainers.image.ref.name": TAG}}]}))
        (layout / "size.json").write_text(json.dumps({"uncompressed": layer.stat().st_size, "compressed": lsize}))
        layout.rename(dest)
        log(f"bench: Debian image built in {time.monotonic() - t0:.0f} s: "
            f"{layer.stat().st_size / 1e6:.0f} MB uncompressed, {lsize / 1e6:.0f} MB compressed")
        return dest
    finally:
        # debootstrap's rootfs may hold mounts if it failed half-way (proc, sys): undo them first.
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(str(work))]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def sizes(layout: Path) -> dict[str, int]:
    try:
        return json.loads((layout / "size.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    build(Path(__file__).resolve().parents[1] / "build" / "debian-minbase-oci")
