"""Pull and push through ``skiff login`` against real registries with htpasswd Basic auth and token auth."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import registries

USER, PASSWORD = "alice", "s3cret-pass"


@pytest.fixture
def skiff_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config.json of this test's own (SKIFF_CONFIG), so logins don't leak between tests."""
    monkeypatch.setenv("SKIFF_CONFIG", str(tmp_path / "cli-config"))
    return tmp_path / "cli-config" / "config.json"


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import bcrypt

    registries.need_tools("skopeo")
    base = tmp_path_factory.mktemp("htpasswd-registry")
    htpasswd = base / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    extra = f"auth: {{htpasswd: {{realm: skiff-test, path: {htpasswd}}}}}\n"
    with registries.serve(base, extra) as host:
        yield host


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, registries.TokenIssuer]]:
    registries.need_tools("skopeo", "openssl")
    base = tmp_path_factory.mktemp("token-registry")
    issuer = registries.TokenIssuer(base, {USER: PASSWORD})
    try:
        with registries.serve(base, issuer.registry_config()) as host:
            yield host, issuer
    finally:
        issuer.close()


def _store_files(engine) -> set[str]:
    blobs = engine.data_root / "graph" / "blobs"
    return {str(p.relative_to(blobs)) for p in blobs.rglob("*") if p.is_file()}


def _round_trip(skiff, engine, host: str, repo: str, skiff_config: Path) -> None:
    ref = f"{host}/{repo}:1"
    skiff("tag", "busybox:latest", ref, check=True)
    try:
        # Anonymous: refused, with a clear message and nothing sent.
        anon = skiff("push", ref)
        assert anon.returncode != 0
        assert "authentication required" in anon.stderr.lower() or "unauthorized" in anon.stderr.lower(), \
            anon.stderr

        # Wrong password: login refuses and stores nothing.
        bad = skiff("login", "-u", USER, "--password-stdin", host, input=b"wrong\n")
        assert bad.returncode != 0
        assert "unauthorized" in bad.stderr.lower() or "authentication required" in bad.stderr.lower(), bad.stderr
        assert not skiff_config.exists() or host not in json.loads(skiff_config.read_text()).get("auths", {})

        good = skiff("login", "-u", USER, "--password-stdin", host, input=f"{PASSWORD}\n".encode(), check=True)
        assert "Login Succeeded" in good.stdout
        assert oct(skiff_config.stat().st_mode & 0o777) == "0o600"

        pushed = skiff("push", ref, check=True).stdout
        assert "Pushed" in pushed and "digest: sha256:" in pushed
        # The registry really has it, checked by skopeo with the same credentials.
        inspected = json.loads(subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{ref}"],
            check=True, capture_output=True, text=True).stdout)
        assert len(inspected["Layers"]) == 1

        # Pull after removing the local copy (and busybox's layer with it: re-tagged after).
        skiff("tag", "busybox:latest", f"keep-{repo}:1", check=True)
        skiff("rmi", ref, check=True)
        pulled = skiff("pull", ref, check=True).stdout
        assert f"Status: Downloaded newer image for {ref}" in pulled
        assert skiff("run", "--rm", "--network", "none", ref, "true").returncode == 0
        assert "Image is up to date" in skiff("pull", ref, check=True).stdout

        # Logged out: a pull of something new is refused again, and leaves nothing in the store.
        assert skiff("logout", host, check=True).returncode == 0
        skiff("rmi", ref, check=True)
        before = _store_files(engine)
        refused = skiff("pull", ref)
        assert refused.returncode != 0
        assert "authentication required" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower(), \
            refused.stderr
        assert _store_files(engine) == before
        missing = skiff("inspect", ref)
        assert missing.returncode != 0 and "No such" in missing.stderr, missing.stderr  # no image half-made
    finally:
        skiff("rmi", ref, f"keep-{repo}:1")


def test_htpasswd_basic_auth(skiff, engine, htpasswd_registry: str, skiff_config: Path) -> None:
    _round_trip(skiff, engine, htpasswd_registry, "basic", skiff_config)


def test_token_auth(skiff, engine, token_registry: tuple[str, registries.TokenIssuer], skiff_config: Path) -> None:
    host, issuer = token_registry
    _round_trip(skiff, engine, host, "tokens", skiff_config)
    scopes = [s for q in issuer.requests for s in q.get("scope", [])]
    # The pull asked for pull only, the push for pull and push: the scopes Docker asks for.
    assert "repository:tokens:pull" in scopes
    assert "repository:tokens:pull,push" in scopes
    assert issuer.refused >= 2  # anonymous push, wrong password


def test_wrong_credentials_stored(skiff, engine, htpasswd_registry: str, skiff_config: Path) -> None:
    """Credentials that went stale after login: the pull says so (UNAUTHENTICATED), not "not found"."""
    import base64

    skiff_config.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{USER}:stale".encode()).decode()
    skiff_config.write_text(json.dumps({"auths": {htpasswd_registry: {"auth": token}}}))
    result = skiff("pull", f"{htpasswd_registry}/basic:nope")
    assert result.returncode != 0
    assert "authentication required" in result.stderr.lower() or "unauthorized" in result.stderr.lower(), \
        result.stderr
