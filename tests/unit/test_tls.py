"""TCP is served only with mutual TLS: a client with a certificate from the CA gets in, others don't."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.apiserver.server import build
from skiff.cli.main import main as skiff
from skiff.common.tls import TLSFiles
from tests.unit.test_apiserver_fakes import FakeExec, FakeGraph, FakeNet

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make certificates")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=skiff test CA",
             "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=d)
    exts = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost", "client": "extendedKeyUsage=clientAuth"}
    for name, ext in exts.items():
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
                 "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return d


@pytest.fixture
def tcp_gateway(pki: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"tcp://127.0.0.1:{port}"
    gateway = build([host], FakeGraph(), FakeExec(), FakeNet(),
                    tls=TLSFiles(pki / "ca.pem", pki / "server.pem", pki / "server-key.pem"))
    gateway.service.start()
    yield host
    gateway.service.stop(0)


def test_client_with_a_certificate_is_served(tcp_gateway: str, pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = skiff(["-H", tcp_gateway, "--tlsverify", "--tlscacert", str(pki / "ca.pem"),
                  "--tlscert", str(pki / "client.pem"), "--tlskey", str(pki / "client-key.pem"), "version"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Server:" in out and "API version:    v1" in out


def test_client_without_a_certificate_is_refused(tcp_gateway: str, pki: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = skiff(["-H", tcp_gateway, "--tlsverify", "--tlscacert", str(pki / "ca.pem"), "version"])
    assert code != 0
    assert "Server:" not in capsys.readouterr().out  # the client part prints; the server never answered
