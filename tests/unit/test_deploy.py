"""The shipped systemd units: valid for systemd, and consistent with skiffd's command lines."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from skiff.supervisor.main import build_specs, parse_args

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICES = ["graphsvc", "execsvc", "netsvc", "apiserver"]


def unit(name: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNITS / name)
    return cp


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify() -> None:
    files = sorted(str(p) for p in UNITS.glob("*.service")) + sorted(str(p) for p in UNITS.glob("*.target"))
    assert len(files) == 5
    res = subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "skiff" not in res.stderr, res.stderr  # no warnings about our units either


@pytest.mark.parametrize("svc", SERVICES)
def test_service_policy(svc: str) -> None:
    s = unit(f"skiff-{svc}.service")
    assert s["Unit"]["PartOf"] == "skiff.target"
    assert s["Service"]["Type"] == "notify"
    assert s["Service"]["Restart"] == "on-failure"
    assert s["Service"]["RuntimeDirectory"] == "skiff"
    assert s["Service"]["RuntimeDirectoryPreserve"] == "yes"
    # Containers' monitors live in execsvc's cgroup: only its main process may be signalled.
    assert s["Service"]["KillMode"] == ("process" if svc == "execsvc" else "mixed")
    assert f"skiff-{svc}.service" in unit("skiff.target")["Unit"]["Wants"].split()


def test_apiserver_starts_after_and_requires_the_backends() -> None:
    u = unit("skiff-apiserver.service")["Unit"]
    backends = {f"skiff-{s}.service" for s in SERVICES[:3]}
    assert set(u["After"].split()) == backends and set(u["Requires"].split()) == backends


@pytest.mark.parametrize("svc", SERVICES)
def test_command_line_matches_skiffd(svc: str) -> None:
    """With default flags, the unit runs the service exactly as skiffd would (bar the log level)."""
    words = shlex.split(unit(f"skiff-{svc}.service")["Service"]["ExecStart"])
    assert words[:2] == ["/usr/bin/env", "${SKIFF_PYTHON}"]
    assert words[-1] == f"$SKIFF_{svc.upper()}_OPTS"
    spec = next(s for s in build_specs(parse_args([]), python="PY") if s.name == svc)
    expected = spec.argv[1:]
    i = expected.index("-l")
    del expected[i : i + 2]
    if "--daemon-id" in expected:  # skiffd's instance id; under systemd the boot id stands for it
        i = expected.index("--daemon-id")
        del expected[i : i + 2]
    assert words[2:-1] == expected
