"""Credentials for a `--registry-mirror`, against real ``docker-registry``s with htpasswd auth.

An engine of this module's own has one mirror (a registry that wants its own user, behind a
front that records the Authorization headers it is sent) and a stand-in for Docker Hub (a
registry with another user, ``SKIFF_HUB_REGISTRY``), so the real hub is never reached. A
mirror gets the credentials of ``skiff login <mirror host>``, else none: never the hub's.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import is_root
from tests.e2e import registries
from tests.e2e.conftest import Engine, start_engine, stop_engine

HUB_USER, HUB_PASS = "hubuser", "hub-pass"
MIRROR_USER, MIRROR_PASS = "mia", "mirror-pass"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class RecordingFront(registries.TamperingFront):
    """A registry's HTTP front that keeps the Authorization header of every request (or "")."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.seen: list[str] = []

    def _forward(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        self.seen.append(req.headers.get("Authorization") or "")
        super()._forward(req, method)


@dataclass
class Setup:
    engine: Engine
    mirror: str  # the registry behind the front
    front: RecordingFront  # what the engine is told is the mirror
    hub: str
    work: Path


def _htpasswd(base: Path, user: str, password: str) -> str:
    import bcrypt

    base.mkdir(parents=True, exist_ok=True)
    path = base / "htpasswd"
    path.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    return f"auth: {{htpasswd: {{realm: skiff-test, path: {path}}}}}\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Setup]:
    if not is_root():
        pytest.skip("the end-to-end tier needs root")
    registries.need_tools("skopeo")
    base = tmp_path_factory.mktemp("mirror-auth")
    with contextlib.ExitStack() as stack:
        mirror = stack.enter_context(registries.serve(base / "mirror",
                                                      _htpasswd(base / "mirror", MIRROR_USER, MIRROR_PASS)))
        hub = stack.enter_context(registries.serve(base / "hub", _htpasswd(base / "hub", HUB_USER, HUB_PASS)))
        front = RecordingFront(mirror)
        stack.callback(front.close)
        eng = start_engine(
            base / "engine", busybox_tar,
            ["--registry-mirror", f"http://{front.host}", "--insecure-registry", "127.0.0.0/8"],
            {"SKIFF_HUB_REGISTRY": hub, "SKIFF_BRIDGE": f"skm{os.getpid() % 100000}",
             "SKIFF_CGROUP_PARENT": f"skiff-e2e-mirror-auth-{os.getpid()}"})
        stack.callback(stop_engine, eng, base / "engine")
        yield Setup(eng, mirror, front, hub, base)


@pytest.fixture
def skiff_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "cli-config"))
    return tmp_path / "cli-config" / "config.json"


def _push(setup: Setup, dest: str, marker: bytes, creds: str, busybox_tar: Path) -> None:
    layout = setup.work / ("layout-" + uuid.uuid4().hex)
    registries.oci_layout(layout, [registries.busybox_layer(busybox_tar, marker)], "t")
    registries.copy_to(layout, "t", dest, creds)


def test_mirror_gets_its_own_login_never_the_hubs(setup: Setup, skiff_config: Path, busybox_tar: Path) -> None:
    skiff = setup.engine.skiff
    _push(setup, f"{setup.mirror}/library/both:1", b"mirror", f"{MIRROR_USER}:{MIRROR_PASS}", busybox_tar)
    _push(setup, f"{setup.hub}/library/both:1", b"hub", f"{HUB_USER}:{HUB_PASS}", busybox_tar)
    try:
        # Logged in to the hub only: the mirror is asked anonymously (and refuses), the hub answers.
        out = skiff("login", "-u", HUB_USER, "--password-stdin", input=f"{HUB_PASS}\n".encode(), check=True)
        assert "Login Succeeded" in out.stdout
        setup.front.seen.clear()
        skiff("pull", "both:1", check=True)
        assert skiff("run", "--rm", "--network", "none", "both:1", "cat", "/marker", check=True).stdout == "hub"
        assert setup.front.seen, "the mirror was not asked"
        assert set(setup.front.seen) == {""}, setup.front.seen  # anonymous: no hub credentials
        skiff("rmi", "both:1", check=True)

        # Logged in to the mirror's host as well: the mirror gets those credentials, and serves.
        out = skiff("login", "-u", MIRROR_USER, "--password-stdin", setup.front.host,
                    input=f"{MIRROR_PASS}\n".encode(), check=True)
        assert "Login Succeeded" in out.stdout
        assert set(json.loads(skiff_config.read_text())["auths"]) == {"https://index.docker.io/v1/",
                                                                      setup.front.host}
        setup.front.seen.clear()
        skiff("pull", "both:1", check=True)
        assert skiff("run", "--rm", "--network", "none", "both:1", "cat", "/marker", check=True).stdout == "mirror"
        sent = {h for h in setup.front.seen if h}
        assert basic(MIRROR_USER, MIRROR_PASS) in sent and basic(HUB_USER, HUB_PASS) not in sent, sent
        assert not any(HUB_PASS in base64.b64decode(h.split()[1]).decode() for h in sent if h.startswith("Basic "))
        skiff("rmi", "both:1", check=True)

        # A name of another registry never goes through the mirror, whatever the logins.
        setup.front.seen.clear()
        skiff("pull", f"{setup.hub}/library/both:1")  # not logged in to that host name: refused
        assert setup.front.seen == []
    finally:
        skiff("logout", check=False)
        skiff("logout", setup.front.host, check=False)
        skiff("rmi", "both:1", f"{setup.hub}/library/both:1", check=False)
