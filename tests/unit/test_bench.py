"""The benchmark's pure parts: where debootstrap gets Debian from, and the results table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"skiff_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


debimage = _load("debimage")
bench = _load("bench")


def test_mirror_from_one_line_and_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# a comment\n"
        "deb-src http://src.example.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.invalid/debian bookworm-backports main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://two.example.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://off.example.invalid/debian\nSuites: trixie\nEnabled: no\n")
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://x.example.invalid/d trixie main\n")
    assert debimage.mirror("bookworm", tmp_path) == "http://two.example.invalid/debian"
    assert debimage.mirror("bookworm-backports", tmp_path) == "http://one.example.invalid/debian"
    with pytest.raises(RuntimeError, match="no apt source for trixie"):
        debimage.mirror("trixie", tmp_path)


def test_table_gives_median_spread_and_ratio_to_each_peer() -> None:
    rows = [bench.Row("1a", "1a. run", {"skiff": [10.0, 30.0, 20.0], "docker": [40.0, 40.0], "podman": []}),
            bench.Row("5a", "5a. idle", {"skiff": [1.5], "docker": [3.0], "podman": []}, "MB")]
    lines = bench.table(rows, ["skiff", "docker", "podman"])
    assert lines[0] == "| scenario | n | skiff | docker | podman | skiff/docker | skiff/podman |"
    assert lines[2] == "| 1a. run | 3 | 20 ms (10-30) | 40 ms (40-40) | — | 0.50 | — |"
    assert lines[3] == "| 5a. idle | 1 | 1.50 MB | 3.00 MB | — | 0.50 | — |"
