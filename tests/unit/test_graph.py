"""graphsvc's container facade: Docker's create-time merge, and a failed create leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skiff.common import errors
from skiff.graphsvc import changes
from skiff.graphsvc.graph import Graph, merge_image_defaults
from skiff.graphsvc.images import DEFAULT_ENV, build_config
from skiff.types.v1 import types_pb2

IMAGE = {"config": {"Cmd": ["sh"], "Entrypoint": None, "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w",
                    "User": "nobody"}}


def cfg(**kw) -> types_pb2.ContainerConfig:
    c = types_pb2.ContainerConfig(image="busybox", env=kw.pop("env", []))
    if "cmd" in kw:
        c.cmd.values[:] = kw.pop("cmd")
    if "entrypoint" in kw:
        c.entrypoint.values[:] = kw.pop("entrypoint")
        c.entrypoint.SetInParent()
    for k, v in kw.items():
        if k == "labels":
            c.labels.update(v)
        else:
            setattr(c, k, v)
    return c


def test_image_defaults_fill_what_the_user_left_empty() -> None:
    merged, argv = merge_image_defaults(cfg(), IMAGE)
    assert argv == ["sh"]
    assert list(merged.env) == ["PATH=/bin", "A=1"]
    assert (merged.working_dir, merged.user) == ("/w", "nobody")


def test_user_values_win_and_env_overrides_by_key() -> None:
    merged, argv = merge_image_defaults(cfg(cmd=["echo", "hi"], env=["A=2", "B=3"], user="root"), IMAGE)
    assert argv == ["echo", "hi"]
    assert list(merged.env) == ["PATH=/bin", "A=2", "B=3"]
    assert merged.user == "root"


def test_the_images_stop_signal_unless_the_user_gave_one() -> None:
    image = {"config": {**IMAGE["config"], "StopSignal": "SIGQUIT"}}
    assert merge_image_defaults(cfg(), image)[0].stop_signal == "SIGQUIT"
    assert merge_image_defaults(cfg(stop_signal="USR1"), image)[0].stop_signal == "USR1"
    assert merge_image_defaults(cfg(), IMAGE)[0].stop_signal == ""


def test_the_images_labels_under_the_users() -> None:
    image = {"config": {**IMAGE["config"], "Labels": {"a": "image", "b": "image"}}}
    merged = merge_image_defaults(types_pb2.ContainerConfig(image="x", labels={"b": "user", "c": "user"}), image)[0]
    assert dict(merged.labels) == {"a": "image", "b": "user", "c": "user"}


def test_entrypoint_resets_the_images_cmd() -> None:
    _, argv = merge_image_defaults(cfg(entrypoint=["/bin/echo"]), IMAGE)
    assert argv == ["/bin/echo"]
    _, argv = merge_image_defaults(cfg(entrypoint=["/bin/echo"], cmd=["x"]), IMAGE)
    assert argv == ["/bin/echo", "x"]


def test_empty_entrypoint_and_no_cmd_is_an_error() -> None:
    with pytest.raises(errors.InvalidArgument, match="No command specified"):
        merge_image_defaults(cfg(entrypoint=[]), {"config": {"Cmd": None}})


def test_import_changes() -> None:
    ch = changes.parse(['CMD ["echo", "x"]', "ENV A=1 B=2", "WORKDIR /srv", "ENTRYPOINT top -b", "USER 1:1"],
                       DEFAULT_ENV)
    assert ch is not None
    assert ch.cmd == ["echo", "x"]
    assert ch.entrypoint == ["/bin/sh", "-c", "top -b"]
    assert ch.env == [*DEFAULT_ENV, "A=1", "B=2"]
    assert (ch.workdir, ch.user) == ("/srv", "1:1")
    with pytest.raises(errors.InvalidArgument, match="not a valid change"):
        changes.parse(["RUN rm -rf /"], DEFAULT_ENV)
    with pytest.raises(errors.InvalidArgument):
        changes.parse(["WORKDIR relative"], DEFAULT_ENV)


def test_label_stopsignal_onbuild_changes() -> None:
    ch = changes.parse(['LABEL a=1 "b c"="two words"', "LABEL legacy some value", "STOPSIGNAL SIGUSR1",
                        "ONBUILD RUN echo hi"], DEFAULT_ENV)
    assert ch is not None
    assert ch.labels == {"a": "1", "b c": "two words", "legacy": "some value"}
    assert (ch.stop_signal, ch.onbuild) == ("SIGUSR1", ["RUN echo hi"])
    config = build_config(["sha256:" + "0" * 64], ch, "", "2026-01-01T00:00:00Z")["config"]
    assert (config["Labels"], config["StopSignal"], config["OnBuild"]) == (ch.labels, "SIGUSR1", ["RUN echo hi"])
    for bad, match in (("STOPSIGNAL NOPE", "invalid signal"), ("STOPSIGNAL 99", "invalid signal"),
                       ("STOPSIGNAL", "signal name"), ("LABEL =x", "KEY=value"), ("ONBUILD FROM x", "ONBUILD"),
                       ('LABEL "unclosed', "LABEL")):
        with pytest.raises(errors.InvalidArgument, match=match):
            changes.parse([bad], DEFAULT_ENV)


def test_expose_change_and_the_merge_of_exposed_ports() -> None:
    ch = changes.parse(["EXPOSE 80 53/udp 80/tcp"], DEFAULT_ENV)
    assert ch is not None and ch.exposed == ["80/tcp", "53/udp"]
    with pytest.raises(errors.InvalidArgument):
        changes.parse(["EXPOSE 70000"], DEFAULT_ENV)
    image = {"config": {"Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}}
    user = types_pb2.ContainerConfig(image="x", exposed_ports=["8080/tcp", "80/tcp"])
    merged, _ = merge_image_defaults(user, image)
    assert list(merged.exposed_ports) == ["80/tcp", "53/udp", "8080/tcp"]


def test_create_stores_the_record_and_the_rootfs(graph: Graph) -> None:
    c, mount = graph.create("web", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    assert graph.get("web").id == c.id
    assert graph.rootfs(c.id)[0] == mount
    assert (c.path, c.args) == ("true", [])
    graph.delete(c.id)
    with pytest.raises(errors.NotFound):
        graph.get(c.id)


def test_failed_create_leaves_nothing(graph: Graph) -> None:
    with pytest.raises(errors.NotFound):  # the linked container does not exist
        graph.create("web", cfg(), types_pb2.HostConfig(links=["nope:db"]))
    assert graph.list() == []
    assert not any((Path(graph.data_root or "") / "vfs" / "containers").iterdir())


def test_create_answers_what_get_reads_back(graph: Graph) -> None:
    """The created container is made from the messages, not parsed back from the stored JSON:
    both are the same."""
    from skiff.graphsvc.servicer import container_to_proto

    config = cfg(cmd=["sh", "-c", "true"], env=["A=1"], labels={"k": "v"},
                 working_dir="/tmp", user="1:1", stop_signal="SIGINT", hostname="h")
    config.exposed_ports.append("80/tcp")
    config.healthcheck.test[:] = ["CMD", "true"]
    config.healthcheck.interval_ns = 2_000_000_000
    host = types_pb2.HostConfig(network_mode="none", memory_bytes=1 << 26, pids_limit=9, binds=["/tmp:/data:ro"],
                                dns=["1.1.1.1"], extra_hosts=["a:1.2.3.4"], auto_remove=True,
                                restart_policy=types_pb2.RestartPolicy(name="no"))
    host.mounts.add(type="volume", destination="/vol")
    made, _ = graph.create("", config, host)
    assert container_to_proto(made) == container_to_proto(graph.get(made.id))


def test_a_name_in_use_leaves_no_layer(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writable layer is made before the record (one commit holds the record and its rootfs):
    a create that cannot store its record gives the layer back, also when the name was taken
    between the first check and the commit."""
    first, _ = graph.create("web", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    with pytest.raises(errors.Conflict):
        graph.create("web", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    monkeypatch.setattr(graph.db, "check_name_free", lambda name: None)  # the race: taken after the check
    with pytest.raises(errors.Conflict) as info:
        graph.create("web", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    assert info.value.reason == errors.NAME_IN_USE
    assert graph.layers.container_ids() == [first.id]
    assert [c.id for c in graph.list()] == [first.id]


def test_a_crash_between_the_layer_and_the_record_is_swept(graph: Graph) -> None:
    from skiff.graphsvc.graph import remove_orphan_container_layers

    orphan = "f" * 64  # what a create cut short after prepare leaves: a layer, no record
    graph.layers.prepare(orphan, list(reversed(graph.images.get("busybox").layers)))
    kept, _ = graph.create("", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    assert remove_orphan_container_layers(graph.db, graph.layers) == [orphan]
    assert graph.layers.container_ids() == [kept.id]


def test_a_chain_file_lost_after_the_commit_is_restored_from_the_record(graph: Graph) -> None:
    """A create does not fsync the layer's chain file: what a power cut after the record's
    commit can leave (a torn chain file, or no layer directory) is made again at start-up."""
    from skiff.graphsvc.graph import restore_container_layers

    torn, _ = graph.create("", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    gone, _ = graph.create("", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    intact, _ = graph.create("", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))
    chain = list(reversed(graph.images.get("busybox").layers))
    cdirs = Path(graph.data_root or "") / "vfs" / "containers"
    (cdirs / torn.id / "layers.json").write_bytes(b"")
    graph.layers.release(gone.id)
    assert sorted(restore_container_layers(graph.db, graph.layers)) == sorted([torn.id, gone.id])
    for c in (torn, gone, intact):
        assert json.loads((cdirs / c.id / "layers.json").read_bytes()) == chain
    assert graph.layers.users(chain[0]) == sorted([torn.id, gone.id, intact.id])
    assert restore_container_layers(graph.db, graph.layers) == []


def test_links_are_edges(graph: Graph) -> None:
    db, _ = graph.create("db", cfg(), types_pb2.HostConfig())
    web, _ = graph.create("web", cfg(), types_pb2.HostConfig(links=["db:database"]))
    assert [(lk.child_id, lk.name) for lk in graph.get("web").links] == [(db.id, "database")]
    assert [lk.parent_id for lk in graph.links("db", parents=True)] == [web.id]


def test_delete_link_keeps_both_containers(graph: Graph) -> None:
    db, _ = graph.create("db", cfg(), types_pb2.HostConfig())
    graph.create("web", cfg(), types_pb2.HostConfig(links=["db:database"]))
    graph.delete_link("web", "database")
    assert graph.get("web").links == [] and graph.get("db").id == db.id
    with pytest.raises(errors.NotFound, match="No such link"):
        graph.delete_link("web", "database")


def test_list_filters_from_the_graphdb(graph: Graph) -> None:
    a, _ = graph.create("aa", cfg(labels={"tier": "db", "x": ""}), types_pb2.HostConfig())
    b, _ = graph.create("bb", cfg(labels={"tier": "web"}), types_pb2.HostConfig())
    base = graph.images.get("busybox")
    # An image made from busybox (commit records the parent): its containers descend from busybox.
    child_config = dict(base.config, parent=base.id, created="2024-01-01T00:00:00Z")
    import json

    child_id = graph.images.add_config(json.dumps(child_config).encode())
    graph.images.tag(child_id, "child:1")
    graph.create("cc", cfg(image="child:1"), types_pb2.HostConfig())

    def names(*filters: tuple[str, str]) -> list[str]:
        return sorted(x.record.name for x in graph.list(list(filters)))

    assert names(("label", "tier")) == ["aa", "bb"]
    assert names(("label", "tier=db")) == ["aa"]
    assert names(("label", "tier"), ("label", "x")) == ["aa"]  # every label filter must match
    assert names(("ancestor", "busybox")) == ["aa", "bb", "cc"]
    assert names(("ancestor", "child:1")) == ["cc"]
    assert names(("ancestor", "busybox"), ("name", "^[ab]")) == ["aa", "bb"]
    assert names(("id", b.id[:10])) == ["bb"]
    with pytest.raises(errors.NotFound, match="No such image"):
        graph.list([("ancestor", "nope")])
    with pytest.raises(errors.InvalidArgument, match="unsupported filter"):
        graph.list([("status", "running")])
    assert a.id


def test_container_sizes(graph: Graph) -> None:
    c, mount = graph.create("sized", cfg(), types_pb2.HostConfig())
    ((cid, rw, root),) = graph.sizes(["sized"])
    assert (cid, rw) == (c.id, 0)
    assert root == graph.images.get("busybox").size
    (Path(mount.source) / "new-file").write_bytes(b"x" * 5000)
    ((_, rw, root),) = graph.sizes([c.id])
    assert rw == 5000 and root == 5000 + graph.images.get("busybox").size


def test_orphan_layers_removed_at_start(graph: Graph, tmp_path: Path) -> None:
    import io
    import tarfile

    from skiff.graphsvc.graph import remove_orphan_layers

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("orphan")
        tf.addfile(info, io.BytesIO(b""))
    orphan = graph.layers.create_layer_from_archive(io.BytesIO(buf.getvalue()))
    kept = graph.images.get("busybox").layers
    c, _ = graph.create("user", cfg(), types_pb2.HostConfig())
    assert remove_orphan_layers(graph.images, graph.layers) == [orphan.id]
    assert not graph.layers.exists(orphan.id)
    assert all(graph.layers.exists(lid) for lid in kept)
    # A layer only a container stacks (its image removed with force) is kept too.
    graph.images.remove("busybox", force=True)
    assert remove_orphan_layers(graph.images, graph.layers) == []
    assert all(graph.layers.exists(lid) for lid in kept) and graph.get(c.id)


def test_delete_many_releases_the_layers_and_a_restart_sweeps_orphans(graph: Graph) -> None:
    from skiff.graphsvc.graph import remove_orphan_container_layers

    made = [graph.create("", cfg(cmd=["true"]), types_pb2.HostConfig(network_mode="none"))[0] for _ in range(3)]
    assert sorted(graph.layers.container_ids()) == sorted(c.id for c in made)
    failed = graph.delete_many([made[0].id, made[1].id, "nosuch"], force=True)
    assert list(failed) == ["nosuch"]
    assert graph.layers.container_ids() == [made[2].id]
    # a removal cut short between its commit and the layer's rename: the layer stays behind
    graph.db.delete_many([made[2].id], force=True)
    assert graph.layers.container_ids() == [made[2].id]
    assert remove_orphan_container_layers(graph.db, graph.layers) == [made[2].id]
    assert graph.layers.container_ids() == []
