"""A client for the registry HTTP API v2 (OCI distribution): manifests, blobs, auth.

Auth follows the Docker flow: a request answered 401 carries a
``WWW-Authenticate`` challenge; ``Bearer realm=…,service=…,scope=…`` means
"get a token from realm" (anonymously, or with Basic credentials, or a refresh
token), ``Basic`` means "send the credentials with each request". Tokens are
cached per client (one client is one repository and one set of scopes).

Loopback registries (``localhost``, 127.0.0.0/8, ``::1``) are spoken to over
plain http, every other one over https. A registry the daemon lists with
``--insecure-registry`` (``host[:port]``, or a CIDR its address falls in) is
tried over https without certificate checks first, then over plain http, as
Docker does; so is a host name any of whose addresses is a loopback one
(Docker's default insecure CIDR 127.0.0.0/8, plus ``::1``). Manifests are
capped at 4 MiB.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiff.common.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SkiffError,
    Unauthenticated,
    Unavailable,
)

MAX_MANIFEST = 4 << 20
CHUNK = 1 << 18
TIMEOUT = 60.0

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
#: Layer media types this engine can unpack (plain, gzip or zstd tar).
LAYER_TYPES = (
    DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
_ARCH_DEFAULT_VARIANT = {"arm64": "v8"}


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def basic(self) -> str | None:
        if not self.username:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="reg",scope="repository:a:pull"`` → Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM.finditer(rest):
        params[m.group(1).lower()] = m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
    return Challenge(scheme.lower(), params)


def plain_http(registry: str) -> bool:
    """Loopback registries are spoken to over http, all others over https."""
    host = urllib.parse.urlsplit("//" + registry).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Docker's default ``--insecure-registry`` CIDRs: a registry on this machine needs no TLS.
DEFAULT_INSECURE_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

Resolver = Callable[[str], set[str]]


def resolve_host(host: str) -> set[str]:
    """Every address ``host`` resolves to (the system's resolver: /etc/hosts, DNS)."""
    return {str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(host, None)}


def _host_port(registry: str) -> tuple[str, int | None]:
    parts = urllib.parse.urlsplit("//" + registry)
    try:
        return parts.hostname or "", parts.port
    except ValueError:
        return parts.hostname or "", None


@dataclass(frozen=True)
class Options:
    """The daemon's registry options: ``--insecure-registry`` and ``--registry-mirror``."""

    #: ``host[:port]`` names or CIDRs (``10.0.0.0/8``).
    insecure: tuple[str, ...] = ()
    #: Mirror URLs (``https://mirror.example``, ``http://127.0.0.1:5000``) tried before Docker Hub.
    mirrors: tuple[str, ...] = ()

    @staticmethod
    def parse(insecure: Sequence[str] = (), mirrors: Sequence[str] = ()) -> Options:
        """Check the values as the daemon gets them; InvalidArgument says which one is wrong."""
        for item in insecure:
            if "://" in item:
                raise InvalidArgument(f"insecure registry {item!r} should not contain '://'")
            if "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise InvalidArgument(f"insecure registry {item!r}: not a host[:port] or a CIDR") from None
        checked = []
        for url in mirrors:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") \
                    or parts.query or parts.fragment:
                raise InvalidArgument(f"invalid registry mirror {url!r}: want http(s)://host[:port]")
            checked.append(f"{parts.scheme}://{parts.netloc}")
        return Options(tuple(insecure), tuple(checked))

    def is_insecure(self, registry: str, resolve: Resolver | None = None) -> bool:
        """Listed by name (``host[:port]`` or ``host`` for every port) or by a CIDR one of its addresses
        is in; the loopback CIDRs are always in (Docker's default), so a name resolving to 127.0.0.1 is."""
        host, port = _host_port(registry)
        networks = list(DEFAULT_INSECURE_NETWORKS)
        for item in self.insecure:
            if "/" in item:
                networks.append(ipaddress.ip_network(item, strict=False))
            elif item in (registry, host) or (port is None and _host_port(item)[0] == host):
                return True
        if not host:
            return False
        try:
            addresses = {ipaddress.ip_address(host)}
        except ValueError:
            try:
                addresses = {ipaddress.ip_address(a) for a in (resolve or resolve_host)(host)}
            except (OSError, ValueError, UnicodeError):
                return False
        return any(addr in net for addr in addresses for net in networks if addr.version == net.version)

    def mirror_hosts(self) -> list[tuple[str, str]]:
        """(scheme, host[:port]) of each mirror, in order."""
        return [(urllib.parse.urlsplit(m).scheme, urllib.parse.urlsplit(m).netloc) for m in self.mirrors]


def parse_platform(spec: str, default_arch: str) -> tuple[str, str, str]:
    """``os/arch[/variant]`` → (os, arch, variant); empty means linux/<this machine>."""
    if not spec:
        return "linux", default_arch, ""
    parts = spec.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f"invalid platform {spec!r}: want os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def choose_manifest(index: dict[str, Any], os_: str, arch: str, variant: str = "") -> dict[str, Any]:
    """The descriptor of a manifest list / OCI index matching the platform, or NotFound."""
    want_variant = variant or _ARCH_DEFAULT_VARIANT.get(arch, "")
    candidates = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        if plat.get("os") != os_ or plat.get("architecture") != arch:
            continue
        if desc.get("mediaType") not in (*MANIFESTS, None):
            continue
        have = plat.get("variant", "")
        if variant and have and have != variant:
            continue
        candidates.append((have == want_variant, desc))
    if not candidates:
        plat_s = "/".join(p for p in (os_, arch, variant) if p)
        raise NotFound(f"no matching manifest for {plat_s} in the manifest list entries")
    candidates.sort(key=lambda c: not c[0])  # an exact variant first, else the first listed
    return candidates[0][1]


class Response:
    """A streaming response; close it (or use it as a context manager)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._conn = conn
        self.raw = resp
        self.status = resp.status
        self.headers = resp.headers

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n) if n >= 0 else self.raw.read()

    def iter(self, size: int = CHUNK) -> Iterator[bytes]:
        while chunk := self.raw.read(size):
            yield chunk

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_message(body: bytes) -> str:
    try:
        errs = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


class Client:
    """One repository on one registry, with the given credentials and actions (``pull``, ``push``)."""

    def __init__(self, registry: str, repository: str, creds: Credentials | None = None,
                 actions: tuple[str, ...] = ("pull",), timeout: float = TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None, *, insecure: bool = False,
                 scheme: str = ""):
        self.registry = registry
        self.repository = repository
        self.creds = creds or Credentials()
        self.actions = actions
        self.timeout = timeout
        self.scheme = scheme or ("http" if plain_http(registry) else "https")
        # An insecure registry: https without certificate checks, else plain http (Docker's order);
        # with the scheme given (a mirror's URL), no fall-back.
        self.insecure = insecure and self.scheme == "https" and not scheme
        if insecure and self.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        self._ssl = ssl_context
        self._auth: str | None = None  # the Authorization header to send, once known
        self._lock = threading.Lock()

    # -- transport --------------------------------------------------------------

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            ctx = self._ssl or ssl.create_default_context()
            return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def _send(self, method: str, url: str, headers: dict[str, str], body: Any = None) -> Response:
        parts = urllib.parse.urlsplit(url)
        if parts.netloc == self.registry and parts.scheme != self.scheme:
            parts = parts._replace(scheme=self.scheme)  # after an insecure registry's fall-back to http
        conn = self._connect(parts.scheme, parts.netloc)
        path = parts.path + ("?" + parts.query if parts.query else "")
        try:
            conn.request(method, path, body=body, headers=headers)
            return Response(conn, conn.getresponse())
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            if self.insecure and parts.scheme == "https" and parts.netloc == self.registry \
                    and (body is None or isinstance(body, bytes)):
                self.scheme, self.insecure = "http", False  # https failed: this one speaks plain http
                return self._send(method, url, headers, body)
            if isinstance(err, ssl.SSLCertVerificationError):
                raise Unavailable(f"registry {self.registry}: {err.verify_message or err}; if the registry is "
                                  "trusted, start the daemon with --insecure-registry "
                                  f"{self.registry}") from None
            raise Unavailable(f"registry {self.registry}: {method} {parts.path}: {err}") from None

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.registry}/v2/{path}"

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, body: Any = None,
                ok: tuple[int, ...] = (200,), redirects: int = 5) -> Response:
        """Send with auth (answering one challenge), following redirects; raise the mapped error."""
        hdrs = dict(headers or {})
        origin = urllib.parse.urlsplit(url).netloc
        if self._auth:
            hdrs["Authorization"] = self._auth
        resp = self._send(method, url, hdrs, body)
        if resp.status == 401 and (body is None or isinstance(body, bytes)):
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.read()
            resp.close()
            self._authenticate(parse_challenge(challenge))
            hdrs["Authorization"] = self._auth or ""
            resp = self._send(method, url, hdrs, body)
        while resp.status in (301, 302, 303, 307, 308) and redirects > 0 and method in ("GET", "HEAD"):
            location = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
            resp.close()
            redirects -= 1
            url = location
            if urllib.parse.urlsplit(url).netloc != origin:
                hdrs.pop("Authorization", None)  # never hand our token to blob storage
            resp = self._send(method, url, hdrs, body)
        if resp.status not in ok:
            raise self._error(method, url, resp)
        return resp

    def _error(self, method: str, url: str, resp: Response) -> SkiffError:
        body = resp.read(64 << 10) if method != "HEAD" else b""
        resp.close()
        what = _error_message(body) or f"HTTP {resp.status}"
        where = f"{self.registry}/{self.repository}" if self.repository else self.registry
        if resp.status == 401:
            return Unauthenticated(f"{where}: authentication required: {what}")
        if resp.status == 403:
            return PermissionDenied(f"{where}: denied: {what}")
        if resp.status == 404:
            return NotFound(f"{where}: not found: {what}")
        if resp.status in (400, 405, 413, 415):
            return InvalidArgument(f"{where}: {method} refused: {what}")
        return Unavailable(f"{where}: {method} {urllib.parse.urlsplit(url).path}: {what}")

    # -- auth -------------------------------------------------------------------

    def _authenticate(self, ch: Challenge) -> None:
        with self._lock:
            if ch.scheme == "basic":
                basic = self.creds.basic()
                if basic is None:
                    raise Unauthenticated(f"{self.registry}: authentication required (skiff login)")
                self._auth = basic
            elif ch.scheme == "bearer":
                self._auth = "Bearer " + self._token(ch)
            else:
                raise Unauthenticated(f"{self.registry}: unsupported authentication scheme {ch.scheme!r}")

    def _token(self, ch: Challenge) -> str:
        realm = ch.params.get("realm")
        if not realm:
            raise Unauthenticated(f"{self.registry}: bearer challenge without a realm")
        # No repository (a login check): a token for no scope, which only proves the credentials.
        scope = f"repository:{self.repository}:{','.join(self.actions)}" if self.repository else ""
        query = {"service": ch.params.get("service", "")}
        if scope:
            query["scope"] = scope
        if self.creds.username:
            query["account"] = self.creds.username
        headers = {}
        if self.creds.identity_token:
            body = urllib.parse.urlencode({
                "grant_type": "refresh_token", "refresh_token": self.creds.identity_token,
                "service": query["service"], "scope": scope, "client_id": "skiff"}).encode()
            resp = self._send("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, body)
        else:
            basic = self.creds.basic()
            if basic:
                headers["Authorization"] = basic
            sep = "&" if "?" in realm else "?"
            resp = self._send("GET", realm + sep + urllib.parse.urlencode(query), headers)
        with resp:
            data = resp.read(1 << 20)
            if resp.status == 401:
                raise Unauthenticated(f"{self.registry}: unauthorized: {_error_message(data) or 'bad credentials'}")
            if resp.status != 200:
                raise Unavailable(f"{self.registry}: token server answered HTTP {resp.status}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise Unavailable(f"{self.registry}: token server sent no token")
        return str(token)

    # -- API --------------------------------------------------------------------

    def ping(self) -> None:
        self.request("GET", f"{self.scheme}://{self.registry}/v2/").close()

    def get_manifest(self, ref: str, accept: tuple[str, ...] = (*MANIFESTS, *INDEXES)) -> tuple[bytes, str]:
        """Manifest bytes and media type, for a tag or a digest; capped at 4 MiB."""
        resp = self.request("GET", self.url(f"{self.repository}/manifests/{ref}"), {"Accept": ", ".join(accept)})
        with resp:
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) > MAX_MANIFEST:
                raise InvalidArgument(f"manifest {ref}: {length} bytes is over the {MAX_MANIFEST} byte limit")
            data = resp.read(MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            raise InvalidArgument(f"manifest {ref}: over the {MAX_MANIFEST} byte limit")
        media = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            doc = json.loads(data)
        except ValueError:
            raise InvalidArgument(f"manifest {ref}: not JSON") from None
        media = doc.get("mediaType") or media
        if media not in (*MANIFESTS, *INDEXES):
            raise InvalidArgument(f"manifest {ref}: unsupported media type {media!r}")
        return data, media

    def get_blob(self, digest: str) -> Response:
        return self.request("GET", self.url(f"{self.repository}/blobs/{digest}"))

    def has_blob(self, digest: str) -> bool:
        try:
            self.request("HEAD", self.url(f"{self.repository}/blobs/{digest}")).close()
        except NotFound:
            return False
        return True

    def upload_blob(self, digest: str, body: Any, size: int) -> None:
        """Monolithic upload: POST for a session, PUT the bytes with ``?digest=``."""
        resp = self.request("POST", self.url(f"{self.repository}/blobs/uploads/"),
                            {"Content-Length": "0"}, b"", ok=(202,))
        location = resp.headers.get("Location", "")
        resp.read()
        resp.close()
        if not location:
            raise Unavailable(f"{self.registry}: blob upload without a Location")
        url = urllib.parse.urljoin(self.url(""), location)
        sep = "&" if "?" in url else "?"
        url += sep + urllib.parse.urlencode({"digest": digest})
        self.request("PUT", url, {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                     body, ok=(201, 204)).close()

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", self.url(f"{self.repository}/manifests/{ref}"),
                            {"Content-Type": media_type}, data, ok=(201, 200))
        digest = resp.headers.get("Docker-Content-Digest", "")
        resp.close()
        return digest
