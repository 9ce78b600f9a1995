"""Real registries for the e2e tests: Debian's ``docker-registry`` on 127.0.0.1, with or without auth.

* :func:`serve` starts one with a config of the test's choosing (htpasswd, token auth, TLS);
* :class:`TokenIssuer` is a small token server for the registry's ``auth.token`` mode: it checks
  Basic credentials and hands out a JWT (RS256, ``x5c`` header) signed with a self-made
  certificate that the registry trusts through ``rootcertbundle``;
* :class:`SlowProxy` forwards TCP to a registry, throttled, so a pull can be interrupted halfway;
* :class:`TamperingFront` forwards HTTP to a registry but answers some manifests itself (a
  malicious registry);
* :func:`oci_layout` writes a small OCI image layout for ``skopeo copy``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REGISTRY_BIN = shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_tools(*tools: str) -> None:
    missing = [t for t in ("docker-registry", *tools) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@contextlib.contextmanager
def serve(base: Path, extra: str = "", *, port: int = 0, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """A registry on 127.0.0.1; yields ``127.0.0.1:<port>``. ``extra`` is more YAML (e.g. ``auth:``)."""
    need_tools()
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    tls_yaml = f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}" if tls else ""
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}{tls_yaml}}}\n" + extra
    )
    log_path = base / "registry.log"
    with open(log_path, "wb") as log:
        assert REGISTRY_BIN is not None
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    ctx = ssl._create_unverified_context() if tls else None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{'https' if tls else 'http'}://{host}/v2/", timeout=1, context=ctx).close()
                break
            except urllib.error.HTTPError:  # 401: up, and asking for credentials
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {log_path.read_text()}")
                time.sleep(0.1)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def self_signed(base: Path, cn: str, san: str = "") -> tuple[Path, Path]:
    """(certificate, key) of a new self-signed RSA certificate, made with openssl."""
    base.mkdir(parents=True, exist_ok=True)
    cert, key = base / f"{cn}.crt", base / f"{cn}.key"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
           "-keyout", str(key), "-out", str(cert)]
    if san:
        cmd += ["-addext", f"subjectAltName={san}"]
    subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """The registry's token server: Basic credentials in, a signed JWT for the scope asked out.

    Requests go to ``realm`` (``http://127.0.0.1:<port>/token``); ``requests`` records the
    query of each, ``refused`` counts the 401s.
    """

    SERVICE = "skiff-test-registry"
    ISSUER = "skiff-test-issuer"

    def __init__(self, base: Path, users: dict[str, str]):
        self.cert, self.key = self_signed(base, "token-signer")
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.requests: list[dict[str, list[str]]] = []
        self.refused = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                issuer._answer(self)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def registry_config(self) -> str:
        return (f"auth: {{token: {{realm: \"{self.realm}\", service: {self.SERVICE}, issuer: {self.ISSUER}, "
                f"rootcertbundle: {self.cert}}}}}\n")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def _answer(self, req: http.server.BaseHTTPRequestHandler) -> None:
        import urllib.parse

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        self.requests.append(query)
        user = ""
        header = req.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(user) != password:
                user = ""
        if not user:
            self.refused += 1
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad or no credentials"}]}).encode()
            req.send_response(401)
        else:
            access = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            now = int(time.time())
            token = self.sign({"iss": self.ISSUER, "sub": user, "aud": self.SERVICE, "iat": now, "nbf": now - 10,
                               "exp": now + 600, "jti": secrets.token_hex(8), "access": access})
            body = json.dumps({"token": token, "expires_in": 600}).encode()
            req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that passes the registry's answers on at ``rate`` bytes a second."""

    def __init__(self, target: str, rate: int):
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.bytes_sent = 0
        self.connections = 0
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target, timeout=10)
            for src, dst, slow in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pipe, args=(src, dst, slow), daemon=True)
                t.start()
                self._threads.append(t)

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        src.settimeout(0.2)
        chunk = max(1024, self.rate // 20) if slow else 65536
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(chunk)
                except TimeoutError:
                    continue
                if not data:
                    break
                dst.sendall(data)
                if slow:
                    self.bytes_sent += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._threads:
            t.join(5)


def layer_tar(members: list[tuple[str, bytes | None]]) -> bytes:
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
                info.size, info.mode = len(data), 0o755
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def busybox_layer(busybox_tar: Path, marker: bytes) -> bytes:
    """The busybox tar plus a file ``/marker``: a layer of its own, so that it is downloaded."""
    buf = io.BytesIO()
    with tarfile.open(busybox_tar) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("marker")
        info.size, info.mode = len(marker), 0o644
        dst.addfile(info, io.BytesIO(marker))
    return buf.getvalue()


def oci_layout(root: Path, layers: list[bytes], tag: str, *, compress: str = "gzip",
               history: int | None = None) -> None:
    """An OCI image layout (``compress``: gzip, zstd or none) for skopeo to copy to a registry."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd, len(data)

    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if compress == "gzip":
            digest, size = put(gzip.compress(raw, compresslevel=1, mtime=0))
            media = "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            import zstandard

            digest, size = put(zstandard.ZstdCompressor(level=3).compress(raw))
            media = "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            digest, size = put(raw)
            media = "application/vnd.oci.image.layer.v1.tar"
        descs.append({"mediaType": media, "digest": digest, "size": size})
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": [{}] * (history or len(layers))}
    cdigest, csize = put(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                           "size": csize}, "layers": descs}
    mdigest, msize = put(json.dumps(manifest).encode())
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def copy_to(layout: Path, tag: str, dest: str, *creds: str) -> None:
    """``skopeo copy oci:<layout>:<tag> docker://<dest>`` (plain http, optional ``--dest-creds``)."""
    extra = ["--dest-creds", creds[0]] if creds else []
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", f"docker://{dest}"],
                   check=True, capture_output=True, timeout=300)


class TamperingFront:
    """An HTTP front for a registry that forwards GET/HEAD, except the manifests it is told to replace.

    ``replace[tag] = (body, with_length)``: ``GET …/manifests/<tag>`` answers ``body``, with a
    ``Content-Length`` or chunked without one. It stands for a malicious registry.
    """

    def __init__(self, target: str):
        self.target = target
        self.replace: dict[str, tuple[bytes, bool]] = {}
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                front._forward(self, "HEAD")

            def do_GET(self) -> None:
                front._forward(self, "GET")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        import http.client

        tag = req.path.rsplit("/manifests/", 1)[1] if "/manifests/" in req.path else None
        if tag in self.replace and method == "GET":
            body, with_length = self.replace[tag]
            req.send_response(200)
            req.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if with_length:
                req.send_header("Content-Length", str(len(body)))
                req.end_headers()
                with contextlib.suppress(OSError):
                    req.wfile.write(body)
            else:
                req.send_header("Transfer-Encoding", "chunked")
                req.end_headers()
                with contextlib.suppress(OSError):
                    for i in range(0, len(body), 1 << 16):
                        piece = body[i:i + (1 << 16)]
                        req.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    req.wfile.write(b"0\r\n\r\n")
            return
        conn = http.client.HTTPConnection(self.target, timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() in ("accept", "authorization")}
        conn.request(method, req.path, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        req.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("content-type", "docker-content-digest", "www-authenticate", "location"):
                req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if method == "GET":
            req.wfile.write(data)
        conn.close()
