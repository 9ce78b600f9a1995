"""Volumes in graphsvc: records, data directories, in-use rules, containers' resolved mounts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.graphsvc import changes
from skiff.graphsvc.graph import Graph
from skiff.graphsvc.graphdb import GraphDB
from skiff.graphsvc.images import DEFAULT_ENV
from skiff.graphsvc.volumes import VOLUME_IN_USE, VolumeStore, disk_usage
from skiff.types.v1 import types_pb2


def run(graph: Graph, name: str, binds: list[str] = (), mounts: list[types_pb2.MountPoint] = ()):  # type: ignore[assignment]
    cfg = types_pb2.ContainerConfig(image="busybox", cmd=types_pb2.StringList(values=["true"]))
    return graph.create(name, cfg, types_pb2.HostConfig(binds=binds, mounts=mounts))[0]


def test_create_is_idempotent_and_names_are_checked(graph: Graph) -> None:
    vs = graph.volumes
    assert vs is not None
    a = vs.create("data", labels={"k": "v"})
    assert Path(a.mountpoint).is_dir() and a.mountpoint.endswith("volumes/data/_data")
    assert vs.create("data", labels={"other": "x"}).labels == {"k": "v"}  # the existing one, unchanged
    anon = vs.create()
    assert len(anon.name) == 64 and anon.anonymous and "com.docker.volume.anonymous" in anon.labels
    for bad in ("x", "a/b", "..", "-x"):
        with pytest.raises(errors.InvalidArgument):
            vs.create(bad)
    with pytest.raises(errors.InvalidArgument, match="driver"):
        vs.create("nfsvol", driver="nfs")
    assert [v.name for v in vs.list([("label", "k=v")])] == ["data"]
    assert [v.name for v in vs.list([("name", "dat")])] == ["data"]
    with pytest.raises(errors.InvalidArgument):
        vs.list([("colour", "red")])


def test_containers_resolve_and_hold_their_volumes(graph: Graph, tmp_path: Path) -> None:
    vs = graph.volumes
    assert vs is not None
    c = run(graph, "web", binds=["cache:/cache", "/anon", f"{tmp_path}:/host:ro"],
            mounts=[types_pb2.MountPoint(type="tmpfs", destination="/t")])
    by_dest = {m.destination: m for m in c.mounts}
    assert [m.destination for m in c.mounts] == ["/anon", "/cache", "/host", "/t"]
    assert by_dest["/cache"].name == "cache" and not by_dest["/cache"].anonymous
    assert by_dest["/anon"].anonymous and by_dest["/anon"].source == vs.get(by_dest["/anon"].name).mountpoint
    assert (by_dest["/host"].source, by_dest["/host"].read_only, by_dest["/host"].propagation) == (
        str(tmp_path), True, "rprivate")
    assert vs.get("cache").ref_count == 1
    with pytest.raises(errors.FailedPrecondition) as err:
        vs.remove("cache")
    assert err.value.reason == VOLUME_IN_USE and c.id in err.value.message
    assert vs.prune(all_=True) == ([], 0)  # both in use
    graph.delete(c.id, remove_volumes=True)  # rm -v: the anonymous one goes, the named one stays
    assert [v.name for v in vs.list()] == ["cache"]
    assert [v.name for v in vs.list([("dangling", "true")])] == ["cache"]
    assert vs.prune() == ([], 0)  # not anonymous
    assert vs.prune(all_=True)[0] == ["cache"]
    assert vs.list() == []
    vs.remove("cache", force=True)  # missing, forced: fine
    with pytest.raises(errors.NotFound):
        vs.remove("cache")


def test_image_volumes_become_anonymous_volumes(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    img = graph.images.get("busybox")
    with_vols = dataclasses.replace(img, config={**img.config, "config": {**img.config.get("config", {}),
                                                                        "Volumes": {"/data": {}, "/logs": {}}}})
    monkeypatch.setattr(graph.images, "config_of", lambda ref: (with_vols.id, with_vols.config))
    c = run(graph, "db", binds=["named:/logs"])
    assert [(m.destination, m.anonymous) for m in c.mounts] == [("/data", True), ("/logs", False)]
    # a failed create leaves no anonymous volume behind
    before = {v.name for v in graph.volumes.list()}  # type: ignore[union-attr]
    with pytest.raises(errors.Conflict):
        run(graph, "db")
    assert {v.name for v in graph.volumes.list()} == before  # type: ignore[union-attr]


def test_volume_change_instruction() -> None:
    ch = changes.parse(['VOLUME ["/a", "/b"]', "VOLUME /c /d"], DEFAULT_ENV)
    assert ch is not None and ch.volumes == ["/a", "/b", "/c", "/d"]
    with pytest.raises(errors.InvalidArgument):
        changes.parse(["VOLUME relative"], DEFAULT_ENV)


def test_gateway_relays_volume_calls_unchanged() -> None:
    """The public and graphsvc volume messages must stay field-for-field the same (the gateway re-encodes)."""
    from skiff.api.v1 import api_pb2
    from skiff.apiserver import volumes as gw
    from skiff.graph.v1 import graph_pb2

    for public, (method, req_type, resp_type) in gw._RPCS.items():
        api_req = getattr(api_pb2, f"{public}Request").DESCRIPTOR
        assert [(f.name, f.number, f.type) for f in api_req.fields] == [
            (f.name, f.number, f.type) for f in req_type.DESCRIPTOR.fields]
        graph_resp = getattr(graph_pb2, f"{method}Response").DESCRIPTOR
        assert [(f.name, f.number, f.type) for f in resp_type.DESCRIPTOR.fields] == [
            (f.name, f.number, f.type) for f in graph_resp.fields]

    class Backend:
        def volume_call(self, method: str, request: object) -> object:
            assert method == "GetVolume" and isinstance(request, graph_pb2.GetVolumeRequest)
            return graph_pb2.GetVolumeResponse(volume=types_pb2.Volume(name=request.name, driver="local"))

    resp = gw.relay(Backend(), "InspectVolume", api_pb2.InspectVolumeRequest(name="data"))
    assert isinstance(resp, api_pb2.InspectVolumeResponse) and resp.volume.name == "data"


def test_a_directory_without_a_record_is_cleared_at_start(tmp_path: Path) -> None:
    db = GraphDB(":memory:")
    vs = VolumeStore(db, tmp_path / "volumes")
    kept = vs.create("kept")
    (Path(kept.mountpoint) / "f").write_text("mine")
    stale = tmp_path / "volumes" / "stale" / "_data"  # a removal interrupted after its record went
    stale.mkdir(parents=True)
    (stale / "old").write_text("old data")
    vs = VolumeStore(db, tmp_path / "volumes")
    assert not stale.parent.exists()
    assert (Path(kept.mountpoint) / "f").read_text() == "mine"
    assert list(Path(vs.create("stale").mountpoint).iterdir()) == []


def test_volume_sizes_count_hard_links_once_and_only_when_asked(tmp_path: Path) -> None:
    store = VolumeStore(GraphDB(":memory:"), tmp_path / "volumes")
    store.create("data")
    root = store.data_path("data")
    (root / "sub").mkdir()
    (root / "sub" / "big").write_bytes(b"x" * 3000)
    (root / "small").write_bytes(b"y" * 7)
    (root / "hard").hardlink_to(root / "sub" / "big")
    (root / "link").symlink_to("/etc/passwd")  # the link itself, never its target
    assert [v.size for v in store.list()] == [-1]
    [vol] = store.list(with_size=True)
    assert vol.size == 3000 + 7 + len("/etc/passwd")
    assert disk_usage(tmp_path / "missing") == 0
