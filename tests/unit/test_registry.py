"""The registry client, references, the content store and pull's verification, without root.

A tiny registry (http.server on 127.0.0.1, in a thread) serves what each test puts in it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skiff.common.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from skiff.graphsvc import reference, registry
from skiff.graphsvc.content import ContentStore, DigestMismatch
from skiff.graphsvc.graphdb import GraphDB
from skiff.graphsvc.images import ImageStore
from skiff.graphsvc.layers import VfsDriver
from skiff.graphsvc.pull import Progress, Puller, RegistryClients

# -- references ------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "name", "tag", "digest", "reg", "repo"), [
    ("busybox", "busybox", "latest", "", "registry-1.docker.io", "library/busybox"),
    ("docker.io/library/busybox:1.36", "busybox", "1.36", "", "registry-1.docker.io", "library/busybox"),
    ("user/app:v2", "user/app", "v2", "", "registry-1.docker.io", "user/app"),
    ("localhost:5000/a/b", "localhost:5000/a/b", "latest", "", "localhost:5000", "a/b"),
    ("127.0.0.1:5000/bb@sha256:" + "a" * 64, "127.0.0.1:5000/bb", "", "sha256:" + "a" * 64,
     "127.0.0.1:5000", "bb"),
    ("quay.io/x/y:1@sha256:" + "b" * 64, "quay.io/x/y", "1", "sha256:" + "b" * 64, "quay.io", "x/y"),
])
def test_reference_parse_and_remote(ref: str, name: str, tag: str, digest: str, reg: str, repo: str) -> None:
    parsed = reference.parse(ref)
    assert (parsed.name, parsed.tag, parsed.digest) == (name, tag, digest)
    assert reference.remote(parsed) == reference.Remote(reg, repo)


@pytest.mark.parametrize("ref", ["a@sha256:00", "a@md5:" + "0" * 32, "a@sha256:" + "A" * 64])
def test_reference_bad_digest(ref: str) -> None:
    with pytest.raises(InvalidArgument, match="digest"):
        reference.parse(ref)


@pytest.mark.parametrize(("registry_", "plain"), [
    ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.8.9.10", True), ("[::1]:5000", True),
    ("registry-1.docker.io", False), ("10.0.0.1:5000", False), ("localhost.example.com", False),
])
def test_plain_http_only_for_loopback(registry_: str, plain: bool) -> None:
    assert registry.plain_http(registry_) is plain


# -- auth challenges ---------------------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    ch = registry.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"')
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"}


def test_parse_basic_challenge() -> None:
    ch = registry.parse_challenge('Basic realm="Registry Realm"')
    assert ch == registry.Challenge("basic", {"realm": "Registry Realm"})


# -- manifest lists ------------------------------------------------------------------------

INDEX = {"manifests": [
    {"mediaType": registry.DOCKER_MANIFEST, "digest": "sha256:amd",
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": registry.DOCKER_MANIFEST, "digest": "sha256:armv6",
     "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"mediaType": registry.DOCKER_MANIFEST, "digest": "sha256:armv7",
     "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"mediaType": registry.DOCKER_MANIFEST, "digest": "sha256:arm64",
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"mediaType": registry.DOCKER_MANIFEST, "digest": "sha256:win",
     "platform": {"os": "windows", "architecture": "amd64"}},
]}


@pytest.mark.parametrize(("platform", "digest"), [
    ("", "sha256:amd"), ("linux/amd64", "sha256:amd"), ("linux/arm/v7", "sha256:armv7"),
    ("linux/arm", "sha256:armv6"), ("linux/arm64", "sha256:arm64"), ("windows/amd64", "sha256:win"),
])
def test_choose_manifest(platform: str, digest: str) -> None:
    os_, arch, variant = registry.parse_platform(platform, "amd64")
    assert registry.choose_manifest(INDEX, os_, arch, variant)["digest"] == digest


def test_choose_manifest_no_match() -> None:
    with pytest.raises(NotFound, match="linux/s390x"):
        registry.choose_manifest(INDEX, "linux", "s390x")
    with pytest.raises(InvalidArgument):
        registry.parse_platform("linux", "amd64")


# -- content store ---------------------------------------------------------------------------


def test_content_store_rejects_a_mismatched_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    good = b"hello"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    with pytest.raises(DigestMismatch):
        store.write([b"evil"], expected=digest)
    with pytest.raises(DigestMismatch):
        store.write([good], expected=digest, expected_size=4)
    assert not store.exists(digest)
    assert list(store.tmp.iterdir()) == []
    assert store.write([b"hel", b"lo"], expected=digest, expected_size=5) == digest
    assert store.path(digest).read_bytes() == good


def test_content_store_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    w = store.writer()
    w.write(b"partial")  # the process dies here: the next start clears the staging
    store2 = ContentStore(tmp_path)
    assert list(store2.tmp.iterdir()) == [] and list(store2.dir.iterdir()) == []


# -- a tiny registry ---------------------------------------------------------------------------


@dataclass
class FakeRegistry:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tamper: set[str] = field(default_factory=set)  # digests served with other bytes
    auth: str = ""  # "", "basic" or "bearer"
    token_requests: list[str] = field(default_factory=list)
    host: str = ""

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest


def _handler(reg: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            got = self.headers.get("Authorization", "")
            if reg.auth == "basic":
                if got == "Basic " + base64.b64encode(b"alice:secret").decode():
                    return True
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}',
                           {"WWW-Authenticate": 'Basic realm="test"'})
                return False
            if reg.auth == "bearer":
                if got == "Bearer tok-123":
                    return True
                self._send(401, b"", {"WWW-Authenticate":
                                      f'Bearer realm="http://{reg.host}/token",service="fake"'})
                return False
            return True

        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                reg.token_requests.append(self.path)
                self._send(200, b'{"token": "tok-123"}')
                return
            if not self._authorized():
                return
            parts = self.path.split("/")
            if self.path == "/v2/":
                self._send(200, b"{}")
            elif len(parts) >= 5 and parts[-2] == "manifests":
                found = reg.manifests.get(parts[-1])
                if found is None:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
                else:
                    self._send(200, found[0], {"Content-Type": found[1]})
            elif len(parts) >= 5 and parts[-2] == "blobs":
                data = reg.blobs.get(parts[-1])
                if data is None:
                    self._send(404)
                else:
                    self._send(200, data[:-1] + b"X" if parts[-1] in reg.tamper else data)
            else:
                self._send(404)

    return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    reg = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    reg.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield reg
    server.shutdown()
    server.server_close()


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image(reg: FakeRegistry, tag: str, layers: list[bytes]) -> str:
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in layers]
    descs = []
    for raw in layers:
        gz = gzip.compress(raw, mtime=0)
        descs.append({"mediaType": registry.DOCKER_LAYER_GZIP, "digest": reg.add_blob(gz), "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": registry.DOCKER_MANIFEST,
                           "config": {"mediaType": registry.DOCKER_CONFIG, "digest": reg.add_blob(config),
                                      "size": len(config)}, "layers": descs}).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    reg.manifests[tag] = reg.manifests[digest] = (manifest, registry.DOCKER_MANIFEST)
    return digest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    db = GraphDB(tmp_path / "graph.db")
    yield ImageStore(tmp_path, VfsDriver(tmp_path), db)
    db.close()


def test_pull_two_layers(fake_registry: FakeRegistry, store: ImageStore) -> None:
    digest = _image(fake_registry, "1", [_layer({"a": b"1"}), _layer({"b": b"2"})])
    events: list[Progress] = []
    image = Puller(store).pull(f"{fake_registry.host}/app:1", "", registry.Credentials(), events.append)
    assert image.repo_tags == [f"{fake_registry.host}/app:1"]
    assert image.repo_digests == [f"{fake_registry.host}/app@{digest}"]
    assert len(image.layers) == 2 and all(store.layers.exists(lid) for lid in image.layers)
    statuses = [e.status for e in events]
    assert statuses.count("Pull complete") == 2 and statuses.count("Download complete") == 2
    assert statuses[-1] == f"Status: Downloaded newer image for {fake_registry.host}/app:1"

    events.clear()
    Puller(store).pull(f"{fake_registry.host}/app@{digest}", "", registry.Credentials(), events.append)
    assert [e.status for e in events].count("Already exists") == 2
    assert events[-1].status.startswith("Status: Image is up to date")


def test_pull_bad_digest_blob_commits_nothing(fake_registry: FakeRegistry, store: ImageStore) -> None:
    _image(fake_registry, "1", [_layer({"a": b"1"})])
    layer_digest = json.loads(fake_registry.manifests["1"][0])["layers"][0]["digest"]
    fake_registry.tamper.add(layer_digest)
    with pytest.raises(DigestMismatch):
        Puller(store).pull(f"{fake_registry.host}/app:1", "", registry.Credentials(), lambda p: None)
    assert not store.content.exists(layer_digest)
    assert list(store.content.tmp.iterdir()) == []
    assert store.list() == []


def test_pull_unknown_tag(fake_registry: FakeRegistry, store: ImageStore) -> None:
    with pytest.raises(NotFound, match="manifest unknown"):
        Puller(store).pull(f"{fake_registry.host}/app:nope", "", registry.Credentials(), lambda p: None)


def test_bearer_token_flow(fake_registry: FakeRegistry) -> None:
    fake_registry.auth = "bearer"
    _image(fake_registry, "1", [_layer({"a": b"1"})])
    client = registry.Client(fake_registry.host, "team/app", registry.Credentials())
    data, media = client.get_manifest("1")
    assert media == registry.DOCKER_MANIFEST and json.loads(data)["schemaVersion"] == 2
    assert len(fake_registry.token_requests) == 1
    assert "scope=repository%3Ateam%2Fapp%3Apull" in fake_registry.token_requests[0]
    assert "service=fake" in fake_registry.token_requests[0]
    client.get_manifest("1")
    assert len(fake_registry.token_requests) == 1  # the token is reused


def test_basic_auth(fake_registry: FakeRegistry) -> None:
    fake_registry.auth = "basic"
    _image(fake_registry, "1", [_layer({"a": b"1"})])
    with pytest.raises(Unauthenticated):
        registry.Client(fake_registry.host, "app").get_manifest("1")
    client = registry.Client(fake_registry.host, "app", registry.Credentials("alice", "secret"))
    assert client.get_manifest("1")[1] == registry.DOCKER_MANIFEST


# -- CLI side ------------------------------------------------------------------------------------


def test_progress_line_and_reference() -> None:
    from skiff.cli import images as cli_images
    from skiff.types.v1 import types_pb2

    p = types_pb2.Progress(id="a3ed95caeb02", status="Downloading", current=1_200_000, total=3_400_000)
    assert cli_images.progress_line(p, tty=False) == "a3ed95caeb02: Downloading"
    line = cli_images.progress_line(p, tty=True)
    assert line.startswith("a3ed95caeb02: Downloading [=================>") and line.endswith("] 1.2MB/3.4MB")
    assert cli_images.full_reference("busybox") == "docker.io/library/busybox:latest"
    assert cli_images.full_reference("user/app:1") == "docker.io/user/app:1"
    assert cli_images.full_reference("127.0.0.1:5000/bb") == "127.0.0.1:5000/bb:latest"


def test_progress_printer_plain_prints_each_status_once() -> None:
    from skiff.cli import images as cli_images
    from skiff.types.v1 import types_pb2

    out = io.StringIO()
    printer = cli_images.ProgressPrinter(out, tty=False)
    for status, cur in [("Pulling fs layer", 0), ("Downloading", 1), ("Downloading", 2), ("Pull complete", 0)]:
        printer.show(types_pb2.Progress(id="abc", status=status, current=cur, total=2))
    printer.show(types_pb2.Progress(status="Digest: sha256:x"))
    assert out.getvalue() == ("abc: Pulling fs layer\nabc: Downloading\nabc: Pull complete\n"
                              "Digest: sha256:x\n")


def test_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.cli import auth

    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "cfg"))
    assert auth.for_reference("127.0.0.1:5000/bb").username == ""
    auth.store("127.0.0.1:5000", "alice", "s3:cret")
    assert (auth.config_path().stat().st_mode & 0o777) == 0o600
    got = auth.for_reference("127.0.0.1:5000/bb:1")
    assert (got.username, got.password, got.server_address) == ("alice", "s3:cret", "127.0.0.1:5000")
    assert auth.registry_of("busybox") == auth.HUB_KEY
    assert auth.erase("127.0.0.1:5000") and auth.lookup("127.0.0.1:5000") is None


# -- daemon options: --insecure-registry, --registry-mirror ------------------------------


@pytest.mark.parametrize(("insecure", "registry_", "expected"), [
    (["myreg.example:5000"], "myreg.example:5000", True),
    (["myreg.example:5000"], "myreg.example:5001", False),
    (["myreg.example"], "myreg.example:5001", True),
    (["10.0.0.0/8"], "10.1.2.3:5000", True),
    (["10.0.0.0/8"], "11.1.2.3:5000", False),
    (["127.0.0.0/8"], "localhost:5000", True),  # a name: its resolved address counts
    ([], "myreg.example", False),
])
def test_insecure_registry_matching(insecure: list[str], registry_: str, expected: bool) -> None:
    assert registry.Options.parse(insecure).is_insecure(registry_) is expected


def fake_resolver(table: dict[str, set[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str) -> set[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]
    return resolve


@pytest.mark.parametrize(("registry_", "addresses", "expected"), [
    ("devbox:5000", {"127.0.1.1"}, True),  # Debian's /etc/hosts maps the hostname to 127.0.1.1
    ("devbox", {"127.0.0.1", "10.0.0.5"}, True),  # any loopback address is enough, as Docker
    ("v6box:5000", {"::1"}, True),
    ("remote.example:5000", {"192.0.2.7", "2001:db8::1"}, False),
    ("unknown.example:5000", None, False),  # does not resolve: secure
    ("127.0.0.1:5000", None, True),
    ("10.1.2.3:5000", None, False),
])
def test_names_resolving_to_loopback_are_insecure_by_default(
        registry_: str, addresses: set[str] | None, expected: bool) -> None:
    host = registry_.split(":")[0]
    table = {host: addresses} if addresses is not None else {}
    assert registry.Options().is_insecure(registry_, resolve=fake_resolver(table)) is expected


def test_resolved_name_in_an_insecure_cidr() -> None:
    resolve = fake_resolver({"build.lan": {"10.9.8.7"}})
    assert registry.Options.parse(["10.0.0.0/8"]).is_insecure("build.lan:5000", resolve=resolve)
    assert not registry.Options().is_insecure("build.lan:5000", resolve=resolve)


@pytest.mark.parametrize(("insecure", "mirrors", "message"), [
    (["http://reg"], [], "should not contain '://'"),
    (["10.0.0.0/99"], [], "not a host[:port] or a CIDR"),
    ([], ["ftp://mirror"], "invalid registry mirror"),
    ([], ["https://mirror/path"], "invalid registry mirror"),
])
def test_bad_registry_options(insecure: list[str], mirrors: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        registry.Options.parse(insecure, mirrors)


def test_insecure_https_falls_back_to_http(fake_registry: FakeRegistry) -> None:
    # The fake speaks plain http on 127.0.0.1; named by a non-loopback spelling it is https first.
    client = registry.Client(fake_registry.host, "app", insecure=True, scheme="")
    client.scheme, client.insecure = "https", True
    client.ping()
    assert client.scheme == "http"


def test_secure_https_does_not_fall_back(fake_registry: FakeRegistry) -> None:
    client = registry.Client(fake_registry.host, "app")
    client.scheme = "https"
    with pytest.raises(Unavailable):
        client.ping()
    assert client.scheme == "https"


def test_mirror_first_then_hub(fake_registry: FakeRegistry, store: ImageStore, tmp_path: Path) -> None:
    hub = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.host = f"127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _image(fake_registry, "1", [_layer({"m": b"mirror"})])  # the mirror has library/onmirror:1
        _image(hub, "2", [_layer({"h": b"hub"})])
        opts = registry.Options.parse([], [f"http://127.0.0.1:{_closed_port()}", f"http://{fake_registry.host}"])
        clients = RegistryClients(opts, hub=hub.host)
        image = Puller(store, clients).pull("onmirror:1", "", registry.Credentials(), lambda p: None)
        assert image.repo_tags == ["onmirror:1"]
        image = Puller(store, clients).pull("onhub:2", "", registry.Credentials(), lambda p: None)
        assert image.repo_tags == ["onhub:2"]
        # A name of another registry never goes to a mirror.
        assert clients.mirrors("quay.io", "x/y") == []
        with pytest.raises(NotFound):
            Puller(store, clients).pull("nowhere:3", "", registry.Credentials(), lambda p: None)
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failed_pull_drops_the_blobs_it_brought(fake_registry: FakeRegistry, store: ImageStore) -> None:
    good, bad = _layer({"a": b"1"}), _layer({"b": b"2"})
    _image(fake_registry, "1", [good, bad])
    manifest = json.loads(fake_registry.manifests["1"][0])
    fake_registry.tamper.add(manifest["layers"][1]["digest"])
    with pytest.raises(DigestMismatch):
        Puller(store).pull(f"{fake_registry.host}/app:1", "", registry.Credentials(), lambda p: None)
    assert list(store.content.dir.iterdir()) == []
    assert list(store.content.tmp.iterdir()) == []


def test_streamed_layer_with_a_wrong_diff_id_is_not_published(fake_registry: FakeRegistry,
                                                                store: ImageStore) -> None:
    """The blob matches its digest, but the tar is not the one the config names: nothing lands."""
    raw, other = _layer({"a": b"1"}), _layer({"a": b"2"})
    gz = gzip.compress(raw, mtime=0)
    desc = {"mediaType": registry.DOCKER_LAYER_GZIP, "digest": fake_registry.add_blob(gz), "size": len(gz)}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(other).hexdigest()]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": registry.DOCKER_MANIFEST, "layers": [desc],
                           "config": {"mediaType": registry.DOCKER_CONFIG, "digest": fake_registry.add_blob(config),
                                      "size": len(config)}}).encode()
    fake_registry.manifests["1"] = (manifest, registry.DOCKER_MANIFEST)
    with pytest.raises(DigestMismatch, match="the config says"):
        Puller(store).pull(f"{fake_registry.host}/app:1", "", registry.Credentials(), lambda p: None)
    assert store.layers.layer_ids() == []
    assert list(store.content.dir.iterdir()) == [] and list(store.content.tmp.iterdir()) == []


def test_streamed_pull_reports_a_bad_tar_whose_blob_is_intact(fake_registry: FakeRegistry,
                                                             store: ImageStore) -> None:
    """A blob that matches its digest but holds a hostile tar: the archive error, nothing kept."""
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tf:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    _image(fake_registry, "1", [evil.getvalue()])
    with pytest.raises(InvalidArgument, match="escapes the layer root"):
        Puller(store).pull(f"{fake_registry.host}/app:1", "", registry.Credentials(), lambda p: None)
    assert store.layers.layer_ids() == []
    assert list(store.content.dir.iterdir()) == [] and list(store.content.tmp.iterdir()) == []


def test_unreferenced_blobs_removed_at_start(tmp_path: Path) -> None:
    content = ContentStore(tmp_path)
    kept = content.write([b"kept"])
    from skiff.graphsvc.content import BlobRef

    content.link("sha256:" + "1" * 64, BlobRef(kept, "application/vnd.oci.image.layer.v1.tar", 4))
    orphan = content.write([b"orphan"])
    assert content.remove_unreferenced() == [orphan]
    assert content.exists(kept) and not content.exists(orphan)


def test_each_mirror_gets_only_its_own_hosts_credentials() -> None:
    from skiff.graphsvc.pull import auth_host

    assert auth_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert auth_host("https://mirror.example/v2/") == "mirror.example"
    assert auth_host("mirror.example:443/x") == "mirror.example:443"
    opts = registry.Options.parse([], ["http://127.0.0.1:5000", "https://mirror.example"])
    clients = RegistryClients(opts)
    mine = registry.Credentials("mia", "mirror-pass")
    got = clients.mirrors(reference.DOCKER_HUB_REGISTRY, "library/x", {"127.0.0.1:5000": mine,
                                                                       "other.example": registry.Credentials("o")})
    assert [(c.registry, c.creds) for c in got] == [("127.0.0.1:5000", mine),
                                                   ("mirror.example", registry.Credentials())]  # anonymous
    assert all(c.creds == registry.Credentials() for c in clients.mirrors(reference.DOCKER_HUB_REGISTRY, "x"))


def test_cli_sends_other_logins_for_hub_references_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.cli import auth

    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path))
    auth.store(auth.HUB_KEY, "hubuser", "hub-pass")
    auth.store("127.0.0.1:5000", "mia", "mirror:pass")
    sent = auth.for_mirrors("busybox")
    assert [(a.server_address, a.username, a.password) for a in sent] == [("127.0.0.1:5000", "mia", "mirror:pass")]
    assert auth.for_mirrors("docker.io/library/busybox:1") == sent
    assert auth.for_mirrors("127.0.0.1:5000/app:1") == []  # not a hub name: no mirror is asked
