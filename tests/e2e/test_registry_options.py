"""The daemon's registry options (``--registry-mirror``, ``--insecure-registry``), zstd layers,
malicious registries and a graphsvc killed in the middle of a pull, against real ``docker-registry``s.

An engine of this module's own is started with the options; Docker Hub names go to a local
registry (``SKIFF_HUB_REGISTRY``) behind a counting proxy, so the real hub is never reached.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import is_root
from tests.e2e import registries
from tests.e2e.conftest import VENV_BIN, Engine, start_engine, stop_engine

LAYER_CAP = 32 << 20  # SKIFF_LAYER_MAX_BYTES of this module's engine


@dataclass
class Setup:
    engine: Engine
    mirror: str  # a registry standing in for the mirror
    hub: str  # a registry standing in for Docker Hub
    hub_proxy: registries.SlowProxy  # in front of the hub: counts connections
    tls_host: str  # ``<hostname>:<port>`` of a registry with a self-signed certificate
    plain_name_host: str  # ``<hostname>:<port>`` of a plain-http registry
    work: Path


def _loopback_hostname() -> str:
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        pytest.skip("the hostname does not resolve")
    if not addr.startswith("127.") or name == "localhost":
        pytest.skip("needs a hostname other than localhost that resolves to 127.0.0.0/8")
    return name


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Setup]:
    if not is_root():
        pytest.skip("the end-to-end tier needs root")
    registries.need_tools("skopeo", "openssl")
    name = _loopback_hostname()
    base = tmp_path_factory.mktemp("registry-options")
    cert, key = registries.self_signed(base / "tls", name, f"DNS:{name}")
    with contextlib.ExitStack() as stack:
        mirror = stack.enter_context(registries.serve(base / "mirror"))
        hub = stack.enter_context(registries.serve(base / "hub"))
        tls = stack.enter_context(registries.serve(base / "tls-registry", tls=(cert, key)))
        plain = stack.enter_context(registries.serve(base / "plain-registry"))
        proxy = registries.SlowProxy(hub, rate=1 << 30)
        stack.callback(proxy.close)
        tls_host = f"{name}:{tls.rsplit(':', 1)[1]}"
        plain_name_host = f"{name}:{plain.rsplit(':', 1)[1]}"
        dead_port = registries.free_port()  # nothing listens there: a mirror that is down
        eng = start_engine(
            base / "engine", busybox_tar,
            ["--registry-mirror", f"http://127.0.0.1:{dead_port}", "--registry-mirror", f"http://{mirror}",
             "--insecure-registry", tls_host, "--insecure-registry", "127.0.0.0/8"],
            {"SKIFF_HUB_REGISTRY": proxy.host, "SKIFF_LAYER_MAX_BYTES": str(LAYER_CAP),
             "SKIFF_BRIDGE": f"sko{os.getpid() % 100000}", "SKIFF_CGROUP_PARENT": f"skiff-e2e-opts-{os.getpid()}"})
        stack.callback(stop_engine, eng, base / "engine")
        yield Setup(eng, mirror, hub, proxy, tls_host, plain_name_host, base)


def _push(setup: Setup, dest: str, layers: list[bytes], *, compress: str = "gzip") -> None:
    layout = setup.work / ("layout-" + uuid.uuid4().hex)
    registries.oci_layout(layout, layers, "t", compress=compress)
    registries.copy_to(layout, "t", dest)


def _store(eng: Engine) -> dict[str, set[str]]:
    """What the content and layer stores hold, temporary directories included."""
    graph = eng.data_root / "graph"

    def names(d: Path) -> set[str]:
        return {p.name for p in d.iterdir()} if d.is_dir() else set()

    return {"blobs": names(graph / "blobs" / "sha256"), "blob-tmp": names(graph / "blobs" / "tmp"),
            "layers": names(graph / "overlay" / "layers") | names(graph / "vfs" / "layers"),
            "layer-tmp": names(graph / "overlay" / "tmp") | names(graph / "vfs" / "tmp")}


# -- --registry-mirror -------------------------------------------------------------


def test_mirror_first_hub_never_reached(setup: Setup, busybox_tar: Path) -> None:
    skiff = setup.engine.skiff
    _push(setup, f"{setup.mirror}/library/mirrored:1", [registries.busybox_layer(busybox_tar, b"mirror")])
    before = setup.hub_proxy.connections
    out = skiff("pull", "mirrored:1", check=True).stdout
    assert "Status: Downloaded newer image for mirrored:1" in out
    assert setup.hub_proxy.connections == before, "the hub was asked although the mirror had the image"
    run = skiff("run", "--rm", "--network", "none", "mirrored:1", "cat", "/marker", check=True)
    assert run.stdout == "mirror"
    skiff("rmi", "mirrored:1", check=True)


def test_mirror_without_the_image_falls_back_to_the_hub(setup: Setup, busybox_tar: Path) -> None:
    skiff = setup.engine.skiff
    _push(setup, f"{setup.hub}/library/hubonly:1", [registries.busybox_layer(busybox_tar, b"hub")])
    before = setup.hub_proxy.connections
    out = skiff("pull", "docker.io/library/hubonly:1", check=True).stdout
    assert "Status: Downloaded newer image for hubonly:1" in out
    assert setup.hub_proxy.connections > before
    assert skiff("run", "--rm", "--network", "none", "hubonly:1", "cat", "/marker", check=True).stdout == "hub"
    # Neither mirror nor hub has it: the hub's answer is the one reported.
    missing = skiff("pull", "nowhere:1")
    assert missing.returncode != 0 and "not found" in missing.stderr.lower(), missing.stderr
    skiff("rmi", "hubonly:1", check=True)


def test_bad_daemon_options_refused(tmp_path: Path) -> None:
    result = subprocess.run([str(VENV_BIN / "skiffd"), "--data-root", str(tmp_path / "d"), "--exec-root",
                             str(tmp_path / "r"), "--registry-mirror", "ftp://mirror/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "invalid registry mirror" in result.stderr
    assert not (tmp_path / "r" / "graphsvc.sock").exists()


# -- --insecure-registry -----------------------------------------------------------


def test_insecure_registry_tls_without_verification(setup: Setup, skiff, busybox_tar: Path) -> None:
    tls_port = setup.tls_host.rsplit(":", 1)[1]
    _push(setup, f"127.0.0.1:{tls_port}/secure:1", [registries.busybox_layer(busybox_tar, b"tls")])
    ref = f"{setup.tls_host}/secure:1"
    # Listed as insecure: https without verification.
    out = setup.engine.skiff("pull", ref, check=True).stdout
    assert f"Downloaded newer image for {ref}" in out
    setup.engine.skiff("rmi", ref, check=True)
    # The shared engine has no --insecure-registry, but the name resolves to 127.0.0.0/8, which is
    # insecure by default (as Docker): https without certificate checks works there too.
    out = skiff("pull", ref, check=True).stdout
    assert f"Downloaded newer image for {ref}" in out
    assert skiff("run", "--rm", "--network", "none", ref, "cat", "/marker", check=True).stdout == "tls"
    skiff("rmi", ref, check=True)


def test_name_resolving_to_loopback_is_insecure_by_default(setup: Setup, skiff, busybox_tar: Path) -> None:
    plain_port = setup.plain_name_host.rsplit(":", 1)[1]
    _push(setup, f"127.0.0.1:{plain_port}/plain:1", [registries.busybox_layer(busybox_tar, b"plain")])
    ref = f"{setup.plain_name_host}/plain:1"
    # A name (not localhost, not an address) resolving to 127.0.0.1: the shared engine has no
    # --insecure-registry, yet falls back to plain http after https fails, as Docker does.
    out = skiff("pull", ref, check=True).stdout
    assert f"Downloaded newer image for {ref}" in out
    assert skiff("run", "--rm", "--network", "none", ref, "cat", "/marker", check=True).stdout == "plain"
    skiff("rmi", ref, check=True)
    # ... and with --insecure-registry 127.0.0.0/8 given explicitly, the same.
    out = setup.engine.skiff("pull", ref, check=True).stdout
    assert f"Downloaded newer image for {ref}" in out
    run = setup.engine.skiff("run", "--rm", "--network", "none", ref, "cat", "/marker", check=True)
    assert run.stdout == "plain"
    setup.engine.skiff("rmi", ref, check=True)


# -- zstd ------------------------------------------------------------------------------


def test_zstd_layers(setup: Setup, skiff, busybox_tar: Path) -> None:
    upper = registries.layer_tar([("etc/", None), ("etc/.wh.motd", b""), ("zstd.txt", b"zstd layer\n")])
    dest = f"{setup.mirror}/zstd:1"
    _push(setup, dest, [registries.busybox_layer(busybox_tar, b"zstd-base"), upper], compress="zstd")
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                                         check=True, capture_output=True, text=True).stdout)
    assert {d["mediaType"] for d in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    out = skiff("pull", dest, check=True).stdout
    assert out.count("Pull complete") == 2, out
    run = skiff("run", "--rm", "--network", "none", dest, "sh", "-c",
                "cat /zstd.txt /marker; test -e /etc/motd && echo motd-visible; true", check=True)
    assert run.stdout == "zstd layer\nzstd-base"
    # Pushed back as it came (the zstd blobs), and skopeo reads it.
    copy = f"{setup.mirror}/zstd-copy:1"
    skiff("tag", dest, copy, check=True)
    skiff("push", copy, check=True)
    pushed = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{copy}"],
                                       check=True, capture_output=True, text=True).stdout)
    assert [d["digest"] for d in pushed["layers"]] == [d["digest"] for d in manifest["layers"]]
    skiff("rmi", dest, copy, check=True)


def test_zstd_bomb_hits_the_cap(setup: Setup) -> None:
    import zstandard

    raw = registries.layer_tar([("zeros", bytes(LAYER_CAP + (4 << 20)))])
    assert len(zstandard.ZstdCompressor().compress(raw)) < LAYER_CAP // 100
    _push(setup, f"{setup.mirror}/zbomb:1", [raw], compress="zstd")
    before = _store(setup.engine)
    result = setup.engine.skiff("pull", f"{setup.mirror}/zbomb:1")
    assert result.returncode != 0
    assert f"uncompressed size exceeds the limit of {LAYER_CAP} bytes" in result.stderr, result.stderr
    assert _store(setup.engine) == before


# -- malicious registries --------------------------------------------------------------


@pytest.fixture
def front(setup: Setup) -> Iterator[registries.TamperingFront]:
    f = registries.TamperingFront(setup.mirror)
    yield f
    f.close()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_manifest_over_4mib_refused(setup: Setup, front: registries.TamperingFront, busybox_tar: Path,
                                    with_length: bool) -> None:
    # A real registry refuses such a manifest, so the front serves it, in place of a real one.
    _push(setup, f"{setup.mirror}/bigman:1", [registries.busybox_layer(busybox_tar, b"big")])
    real = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                      f"docker://{setup.mirror}/bigman:1"], check=True, capture_output=True,
                                     text=True).stdout)
    real["annotations"] = {"filler": "x" * (5 << 20)}
    front.replace["2"] = (json.dumps(real).encode(), with_length)
    before = _store(setup.engine)
    result = setup.engine.skiff("pull", f"{front.host}/bigman:2")
    assert result.returncode != 0
    assert "over the 4194304 byte limit" in result.stderr, result.stderr
    assert _store(setup.engine) == before
    # The same repository through the same front, unmodified: fine.
    assert setup.engine.skiff("pull", f"{front.host}/bigman:1", check=True).returncode == 0
    setup.engine.skiff("rmi", f"{front.host}/bigman:1", check=True)


def test_gzip_bomb_fails_cleanly_then_a_good_pull_works(setup: Setup, busybox_tar: Path) -> None:
    raw = registries.layer_tar([("zeros", bytes(LAYER_CAP + (4 << 20)))])
    assert len(gzip.compress(raw, compresslevel=9)) < LAYER_CAP // 100
    _push(setup, f"{setup.mirror}/bomb:1", [raw])
    before = _store(setup.engine)
    result = setup.engine.skiff("pull", f"{setup.mirror}/bomb:1")
    assert result.returncode != 0
    assert f"uncompressed size exceeds the limit of {LAYER_CAP} bytes" in result.stderr, result.stderr
    assert _store(setup.engine) == before, "the pull left something behind"
    assert f"{setup.mirror}/bomb" not in setup.engine.skiff("images").stdout
    _push(setup, f"{setup.mirror}/good:1", [registries.busybox_layer(busybox_tar, b"good")])
    assert setup.engine.skiff("pull", f"{setup.mirror}/good:1", check=True).returncode == 0
    setup.engine.skiff("rmi", f"{setup.mirror}/good:1", check=True)


def _registry_blob(setup: Setup, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return setup.work / "mirror" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


def test_blob_digest_mismatch_never_committed(setup: Setup, busybox_tar: Path) -> None:
    dest = f"{setup.mirror}/tampered:1"
    _push(setup, dest, [registries.busybox_layer(busybox_tar, b"tampered")])
    manifest = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                                         check=True, capture_output=True, text=True).stdout)
    digest = manifest["layers"][0]["digest"]
    blob = _registry_blob(setup, digest)
    good = blob.read_bytes()
    # Same size, other bytes: the registry serves it as it is (it does not check on reads).
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    blob.write_bytes(bytes(bad))
    try:
        before = _store(setup.engine)
        result = setup.engine.skiff("pull", dest)
        assert result.returncode != 0
        assert "digest mismatch" in result.stderr and digest in result.stderr, result.stderr
        after = _store(setup.engine)
        assert after == before and digest.removeprefix("sha256:") not in after["blobs"]
    finally:
        blob.write_bytes(good)
    assert setup.engine.skiff("pull", dest, check=True).returncode == 0
    setup.engine.skiff("rmi", dest, check=True)


# -- graphsvc killed mid-pull ------------------------------------------------------------


def test_graphsvc_killed_mid_pull(setup: Setup, busybox_tar: Path) -> None:
    eng = setup.engine
    big = registries.layer_tar([("random.bin", os.urandom(24 << 20))])
    _push(setup, f"{setup.mirror}/slow:1", [registries.busybox_layer(busybox_tar, b"slow"), big])
    proxy = registries.SlowProxy(setup.mirror, rate=2 << 20)  # 24 MiB take about 12 s
    try:
        ref = f"{proxy.host}/slow:1"
        before = _store(eng)
        old_pid = eng.service_pid("graphsvc")
        env = dict(os.environ, SKIFF_HOST=eng.host)
        with subprocess.Popen([str(VENV_BIN / "skiff"), "pull", ref], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) as cli:
            tmp = eng.data_root / "graph" / "blobs" / "tmp"
            deadline = time.monotonic() + 60
            while not any(p.stat().st_size > (1 << 20) for p in tmp.iterdir()):
                assert cli.poll() is None, cli.communicate()
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            os.kill(old_pid, signal.SIGKILL)
            out, err = cli.communicate(timeout=60)
        assert cli.returncode != 0, out
        assert "graphsvc) stopped in the middle of the pull" in err and "run the pull again" in err, err

        deadline = time.monotonic() + 60
        while eng.skiff("images").returncode != 0:
            assert time.monotonic() < deadline, "graphsvc did not come back"
            time.sleep(0.2)
        assert eng.service_pid("graphsvc") != old_pid
        # Back up: the staging of the interrupted blob is gone, nothing half-written remains.
        after = _store(eng)
        assert after == before, "the interrupted pull left something behind"
        missing = eng.skiff("inspect", ref)
        assert missing.returncode != 0 and "No such" in missing.stderr, missing.stderr  # no image half-made

        proxy.rate = 1 << 30
        out2 = eng.skiff("pull", ref, check=True, timeout=120).stdout
        assert f"Downloaded newer image for {ref}" in out2
        run = eng.skiff("run", "--rm", "--network", "none", ref, "sh", "-c", "cat /marker; echo; wc -c < /random.bin",
                        check=True)
        assert run.stdout.split() == ["slow", str(24 << 20)]
        eng.skiff("rmi", ref, check=True)
    finally:
        proxy.close()
