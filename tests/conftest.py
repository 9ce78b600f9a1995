"""Shared test configuration: tiers and the machine facts they depend on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUSYBOX_TAR = ROOT / "build" / "busybox.tar"


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def busybox_tar() -> Path:
    """The demo image's root filesystem tarball, built from Debian's busybox-static."""
    if not BUSYBOX_TAR.exists():
        BUSYBOX_TAR.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(ROOT / "deploy" / "mkimage-busybox.sh"), str(BUSYBOX_TAR)], check=True)
    return BUSYBOX_TAR
