"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.graphsvc.graph import Graph
from skiff.graphsvc.graphdb import GraphDB
from skiff.graphsvc.images import ImageStore
from skiff.graphsvc.layers import VfsDriver
from skiff.graphsvc.volumes import VolumeStore


@pytest.fixture
def graph(tmp_path: Path, busybox_tar: Path) -> Graph:
    """A Graph (in-memory GraphDB, vfs layers, volumes) with the busybox image imported."""
    db = GraphDB(":memory:")
    layers = VfsDriver(tmp_path)
    images = ImageStore(tmp_path, layers, db)
    with open(busybox_tar, "rb") as f:
        images.import_archive(f, "busybox")
    return Graph(db, images, layers, "vfs", tmp_path, VolumeStore(db, tmp_path / "volumes"))
