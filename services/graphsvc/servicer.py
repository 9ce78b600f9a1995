"""gRPC adapters for graphsvc: proto in, domain call, proto out. No logic here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from skiff.common import errors, grpcerr, itemerr, memory, streams
from skiff.common.errors import InvalidArgument
from skiff.graph.v1 import graph_pb2, graph_pb2_grpc
from skiff.graphsvc import changes as changes_mod
from skiff.graphsvc import commit as commit_mod
from skiff.graphsvc import imagefilter, registry, saveload
from skiff.graphsvc import images as images_mod
from skiff.graphsvc import pull as pull_mod
from skiff.graphsvc import push as push_mod
from skiff.graphsvc import volumes as volumes_mod
from skiff.graphsvc.graph import Container, Graph, merge_healthcheck
from skiff.graphsvc.graphdb import ContainerRecord
from skiff.graphsvc.layers import Mount
from skiff.types.v1 import types_pb2


def timestamp(rfc3339: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if rfc3339:
        ts.FromDatetime(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")))
    return ts


def image_to_proto(image: images_mod.Image) -> types_pb2.Image:
    cfg: dict[str, Any] = image.config.get("config") or {}
    run = types_pb2.ContainerConfig(env=cfg.get("Env") or [], working_dir=cfg.get("WorkingDir") or "",
                                    user=cfg.get("User") or "", labels=cfg.get("Labels") or {},
                                    exposed_ports=list(cfg.get("ExposedPorts") or {}),
                                    stop_signal=cfg.get("StopSignal") or "")
    if cfg.get("Cmd") is not None:
        run.cmd.values[:] = cfg["Cmd"]
    if cfg.get("Entrypoint") is not None:
        run.entrypoint.values[:] = cfg["Entrypoint"]
    if cfg.get("Healthcheck"):
        merge_healthcheck(run, cfg["Healthcheck"])
    history = image.config.get("history") or [{}]
    return types_pb2.Image(
        id=image.id, repo_tags=image.repo_tags, created=timestamp(image.created), size=image.size,
        layers=image.layers, config=run, repo_digests=image.repo_digests, comment=history[-1].get("comment", ""),
        architecture=image.config.get("architecture", ""), os=image.config.get("os", ""),
        parent_id=image.config.get("parent", "") if isinstance(image.config.get("parent"), str) else "",
    )


def mount_to_proto(mount: Mount) -> types_pb2.Mount:
    return types_pb2.Mount(type=mount.type, source=mount.source, options=mount.options)


def container_to_proto(c: Container) -> graph_pb2.Container:
    out = graph_pb2.Container(
        id=c.id, name=c.record.name, image_id=c.record.image_id, created=timestamp(c.record.created),
        config=c.config, host_config=c.host_config, path=c.path, args=c.args,
        links=[types_pb2.Link(parent_id=lk.parent_id, child_id=lk.child_id, name=lk.name) for lk in c.links],
        mounts=c.mounts,
    )
    if c.restart_state:
        json_format.ParseDict(c.restart_state, out.restart_state, ignore_unknown_fields=True)
    return out


def _brief(record: ContainerRecord) -> graph_pb2.Container:
    """GetContainers(brief): what a removal decides on."""
    out = graph_pb2.Container(id=record.id, name=record.name, image_id=record.image_id)
    policy = record.config.get("host_config", {}).get("restart_policy")
    if policy:
        json_format.ParseDict(policy, out.host_config.restart_policy, ignore_unknown_fields=True)
    state = record.config.get("restart_state")
    if state:
        json_format.ParseDict(state, out.restart_state, ignore_unknown_fields=True)
    return out


def _item(err: errors.SkiffError) -> graph_pb2.ContainerResult:
    code, message, reason = itemerr.fields(err)
    return graph_pb2.ContainerResult(code=code, message=message, reason=reason)


def progress_to_proto(p: pull_mod.Progress) -> types_pb2.Progress:
    return types_pb2.Progress(id=p.id, status=p.status, current=p.current, total=p.total)


def credentials(auth: types_pb2.RegistryAuth) -> registry.Credentials:
    return registry.Credentials(auth.username, auth.password, auth.identity_token)


class ImageServicer(graph_pb2_grpc.ImageServiceServicer):
    def __init__(self, graph: Graph, client_factory: pull_mod.ClientFactory = pull_mod.default_client):
        self.graph = graph
        self.puller = pull_mod.Puller(graph.images, client_factory)
        self.pusher = push_mod.Pusher(graph.images, client_factory)

    def PullImage(self, request: graph_pb2.PullImageRequest,
                  context: grpc.ServicerContext) -> Iterator[graph_pb2.PullImageResponse]:
        with grpcerr.handle(context):
            creds = credentials(request.auth)
            mirror_creds = {pull_mod.auth_host(a.server_address): credentials(a)
                            for a in request.mirror_auths if a.server_address}
            try:
                for item in pull_mod.with_progress(
                        lambda report: self.puller.pull(request.reference, request.platform, creds, report,
                                                        mirror_creds)):
                    if isinstance(item, pull_mod.Progress):
                        yield graph_pb2.PullImageResponse(progress=progress_to_proto(item))
                    else:
                        yield graph_pb2.PullImageResponse(image=image_to_proto(item))
            finally:
                memory.trim()  # the download and unpack buffers are freed: give their pages back

    def PushImage(self, request: graph_pb2.PushImageRequest,
                  context: grpc.ServicerContext) -> Iterator[graph_pb2.PushImageResponse]:
        with grpcerr.handle(context):
            creds = credentials(request.auth)
            for item in pull_mod.with_progress(
                    lambda report: self.pusher.push(request.reference, creds, report)):
                if isinstance(item, pull_mod.Progress):
                    yield graph_pb2.PushImageResponse(progress=progress_to_proto(item))
                else:
                    yield graph_pb2.PushImageResponse(digest=item)

    def TagImage(self, request: graph_pb2.TagImageRequest,
                 context: grpc.ServicerContext) -> graph_pb2.TagImageResponse:
        with grpcerr.handle(context):
            self.graph.images.tag(request.source, request.target)
            return graph_pb2.TagImageResponse()

    def ImportImage(self, request_iterator: Iterator[graph_pb2.ImportImageRequest],
                    context: grpc.ServicerContext) -> graph_pb2.ImportImageResponse:
        with grpcerr.handle(context):
            first = next(request_iterator, None)
            if first is None or not first.HasField("metadata"):
                raise InvalidArgument("the first ImportImage message must carry the metadata")
            meta = first.metadata
            changes = changes_mod.parse(list(meta.changes), images_mod.DEFAULT_ENV)
            chunks = (req.chunk for req in request_iterator if req.HasField("chunk"))
            with streams.reader(chunks) as stream:
                image = self.graph.images.import_archive(stream, meta.reference or None, changes, meta.message)
            return graph_pb2.ImportImageResponse(image=image_to_proto(image))

    def ListImages(self, request: graph_pb2.ListImagesRequest,
                   context: grpc.ServicerContext) -> graph_pb2.ListImagesResponse:
        with grpcerr.handle(context):
            images = imagefilter.apply(self.graph.images.list(), [(f.key, f.value) for f in request.filters],
                                       self.graph.images)
            return graph_pb2.ListImagesResponse(images=[image_to_proto(i) for i in images])

    def GetImage(self, request: graph_pb2.GetImageRequest,
                 context: grpc.ServicerContext) -> graph_pb2.GetImageResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetImageResponse(image=image_to_proto(self.graph.images.get(request.image)))

    def RemoveImage(self, request: graph_pb2.RemoveImageRequest,
                    context: grpc.ServicerContext) -> graph_pb2.RemoveImageResponse:
        with grpcerr.handle(context):
            items = []
            for kind, value in self.graph.images.remove(request.image, force=request.force):
                if kind == "Untagged":
                    items.append(types_pb2.ImageDeleteItem(untagged=value))
                else:
                    items.append(types_pb2.ImageDeleteItem(deleted=value))
            return graph_pb2.RemoveImageResponse(items=items)

    def GetStoreInfo(self, request: graph_pb2.GetStoreInfoRequest,
                     context: grpc.ServicerContext) -> graph_pb2.GetStoreInfoResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetStoreInfoResponse(
                storage_driver=self.graph.driver_name, images=len(self.graph.images.list()),
                containers=len(self.graph.db.list()), data_root=str(self.graph.data_root))


class ContainerGraphServicer(graph_pb2_grpc.ContainerGraphServiceServicer):
    def __init__(self, graph: Graph):
        self.graph = graph
        #: id -> (the Container a message was made from, the message): Graph.list reuses the
        #: Container objects of unchanged rows, so a list after one write converts one
        self._protos: dict[str, tuple[Container, graph_pb2.Container]] = {}

    def _listed_proto(self, c: Container, made: dict[str, tuple[Container, graph_pb2.Container]]
                      ) -> graph_pb2.Container:
        hit = self._protos.get(c.id)
        msg = hit[1] if hit is not None and hit[0] is c else container_to_proto(c)
        made[c.id] = (c, msg)
        return msg

    def CreateContainer(self, request: graph_pb2.CreateContainerRequest,
                        context: grpc.ServicerContext) -> graph_pb2.CreateContainerResponse:
        with grpcerr.handle(context):
            container, mount = self.graph.create(request.name, request.config, request.host_config)
            return graph_pb2.CreateContainerResponse(container=container_to_proto(container),
                                                     rootfs=mount_to_proto(mount))

    def GetContainer(self, request: graph_pb2.GetContainerRequest,
                     context: grpc.ServicerContext) -> graph_pb2.GetContainerResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetContainerResponse(container=container_to_proto(self.graph.get(request.container)))

    def GetContainers(self, request: graph_pb2.GetContainersRequest,
                      context: grpc.ServicerContext) -> graph_pb2.GetContainersResponse:
        with grpcerr.handle(context):
            results = []
            if request.brief:
                return graph_pb2.GetContainersResponse(results=[
                    _item(found) if isinstance(found, errors.SkiffError)
                    else graph_pb2.ContainerResult(container=_brief(found))
                    for found in self.graph.db.get_many(list(request.containers))])
            for found in self.graph.get_many(list(request.containers)):
                if isinstance(found, errors.SkiffError):
                    results.append(_item(found))
                else:
                    results.append(graph_pb2.ContainerResult(container=container_to_proto(found)))
            return graph_pb2.GetContainersResponse(results=results)

    def ListContainers(self, request: graph_pb2.ListContainersRequest,
                       context: grpc.ServicerContext) -> graph_pb2.ListContainersResponse:
        with grpcerr.handle(context):
            filters = [(f.key, f.value) for f in request.filters]
            generation, listed = self.graph.list_since(request.if_changed_since, filters)
            if listed is None:
                return graph_pb2.ListContainersResponse(generation=generation, unchanged=True)
            made: dict[str, tuple[Container, graph_pb2.Container]] = {}
            resp = graph_pb2.ListContainersResponse(
                containers=[self._listed_proto(c, made) for c in listed], generation=generation)
            if not filters:
                self._protos = made  # a concurrent list may win: either is a correct cache
            return resp

    def DeleteLink(self, request: graph_pb2.DeleteLinkRequest,
                   context: grpc.ServicerContext) -> graph_pb2.DeleteLinkResponse:
        with grpcerr.handle(context):
            self.graph.delete_link(request.parent, request.name)
            return graph_pb2.DeleteLinkResponse()

    def GetContainerSizes(self, request: graph_pb2.GetContainerSizesRequest,
                          context: grpc.ServicerContext) -> graph_pb2.GetContainerSizesResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetContainerSizesResponse(sizes=[
                graph_pb2.ContainerSize(container_id=cid, size_rw=rw, size_root_fs=root)
                for cid, rw, root in self.graph.sizes(list(request.containers))])

    def GetRootfs(self, request: graph_pb2.GetRootfsRequest,
                  context: grpc.ServicerContext) -> graph_pb2.GetRootfsResponse:
        with grpcerr.handle(context):
            mount, upper = self.graph.rootfs(request.container_id)
            return graph_pb2.GetRootfsResponse(rootfs=mount_to_proto(mount), upper_dir=upper)

    def RenameContainer(self, request: graph_pb2.RenameContainerRequest,
                        context: grpc.ServicerContext) -> graph_pb2.RenameContainerResponse:
        with grpcerr.handle(context):
            return graph_pb2.RenameContainerResponse(
                container=container_to_proto(self.graph.rename(request.container, request.new_name)))

    def DeleteContainer(self, request: graph_pb2.DeleteContainerRequest,
                        context: grpc.ServicerContext) -> graph_pb2.DeleteContainerResponse:
        with grpcerr.handle(context):
            self.graph.delete(request.container_id, force=request.force, remove_volumes=request.remove_volumes)
            return graph_pb2.DeleteContainerResponse()

    def DeleteContainers(self, request: graph_pb2.DeleteContainersRequest,
                         context: grpc.ServicerContext) -> graph_pb2.DeleteContainersResponse:
        with grpcerr.handle(context):
            failed = self.graph.delete_many(list(request.container_ids), force=request.force,
                                            remove_volumes=request.remove_volumes)
            out = []
            for cid, err in failed.items():
                code, message, reason = itemerr.fields(err)
                out.append(graph_pb2.ContainerFailure(container_id=cid, code=code, message=message, reason=reason))
            return graph_pb2.DeleteContainersResponse(failed=out)

    def ListLinks(self, request: graph_pb2.ListLinksRequest,
                  context: grpc.ServicerContext) -> graph_pb2.ListLinksResponse:
        with grpcerr.handle(context):
            parents = request.direction == graph_pb2.LINK_DIRECTION_PARENTS
            links = self.graph.links(request.container, parents=parents)
            return graph_pb2.ListLinksResponse(
                links=[types_pb2.Link(parent_id=lk.parent_id, child_id=lk.child_id, name=lk.name)
                       for lk in links])

    def UpdateHostConfig(self, request: graph_pb2.UpdateHostConfigRequest,
                         context: grpc.ServicerContext) -> graph_pb2.UpdateHostConfigResponse:
        with grpcerr.handle(context):
            c = self.graph.update_host_config(request.container_id, request.host_config)
            return graph_pb2.UpdateHostConfigResponse(container=container_to_proto(c))

    def SetRestartState(self, request: graph_pb2.SetRestartStateRequest,
                        context: grpc.ServicerContext) -> graph_pb2.SetRestartStateResponse:
        with grpcerr.handle(context):
            self.graph.set_restart_state(request.container_id, json_format.MessageToDict(
                request.restart_state, preserving_proto_field_name=True))
            return graph_pb2.SetRestartStateResponse()


def tools_tmp(graph: Graph) -> Path:
    """Private staging for load spools and export mount points; emptied at start (leftovers of a crash)."""
    tmp = graph.images.dir.parent.parent / "tools-tmp"
    if tmp.exists():
        for leftover in tmp.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink()
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    return tmp


_KINDS = {"A": types_pb2.CHANGE_KIND_ADDED, "C": types_pb2.CHANGE_KIND_MODIFIED, "D": types_pb2.CHANGE_KIND_DELETED}


class ImageToolServicer(graph_pb2_grpc.ImageToolServiceServicer):
    def __init__(self, graph: Graph, client_factory: pull_mod.ClientFactory = pull_mod.default_client):
        tmp = tools_tmp(graph)
        self.saver = saveload.Saver(graph.images, tmp)
        self.loader = saveload.Loader(graph.images, tmp)
        self.snapshots = commit_mod.Snapshots(graph, tmp)
        self.client_factory = client_factory

    def SaveImages(self, request: graph_pb2.SaveImagesRequest,
                   context: grpc.ServicerContext) -> Iterator[graph_pb2.SaveImagesResponse]:
        with grpcerr.handle(context):
            for chunk in _rechunk(self.saver.save(list(request.images))):
                yield graph_pb2.SaveImagesResponse(chunk=chunk)

    def LoadImages(self, request_iterator: Iterator[graph_pb2.LoadImagesRequest],
                   context: grpc.ServicerContext) -> graph_pb2.LoadImagesResponse:
        with grpcerr.handle(context):
            try:
                with streams.reader(req.chunk for req in request_iterator) as stream:
                    messages, images = self.loader.load(stream)
            finally:
                memory.trim()
            return graph_pb2.LoadImagesResponse(messages=messages, images=[image_to_proto(i) for i in images])

    def CommitContainer(self, request: graph_pb2.CommitContainerRequest,
                        context: grpc.ServicerContext) -> graph_pb2.CommitContainerResponse:
        with grpcerr.handle(context):
            image = self.snapshots.commit(request.container, request.reference, request.message, request.author,
                                          list(request.changes))
            return graph_pb2.CommitContainerResponse(image=image_to_proto(image))

    def ListContainerChanges(self, request: graph_pb2.ListContainerChangesRequest,
                             context: grpc.ServicerContext) -> graph_pb2.ListContainerChangesResponse:
        with grpcerr.handle(context):
            return graph_pb2.ListContainerChangesResponse(changes=[
                types_pb2.FileChange(path=path, kind=_KINDS[kind])
                for kind, path in self.snapshots.changes(request.container)])

    def ExportContainer(self, request: graph_pb2.ExportContainerRequest,
                        context: grpc.ServicerContext) -> Iterator[graph_pb2.ExportContainerResponse]:
        with grpcerr.handle(context):
            for chunk in self.snapshots.export(request.container):
                yield graph_pb2.ExportContainerResponse(chunk=chunk)

    def GetImageHistory(self, request: graph_pb2.GetImageHistoryRequest,
                        context: grpc.ServicerContext) -> graph_pb2.GetImageHistoryResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetImageHistoryResponse(items=[
                types_pb2.ImageHistoryItem(id=h.id, created=timestamp(h.created), created_by=h.created_by,
                                           size=h.size, comment=h.comment, tags=h.tags)
                for h in self.snapshots.history(request.image)])

    def CheckRegistryLogin(self, request: graph_pb2.CheckRegistryLoginRequest,
                           context: grpc.ServicerContext) -> graph_pb2.CheckRegistryLoginResponse:
        with grpcerr.handle(context):
            server = request.server or "registry-1.docker.io"
            self.client_factory(server, "", credentials(request.auth), ("pull",)).ping()
            return graph_pb2.CheckRegistryLoginResponse(status="Login Succeeded")


def _rechunk(chunks: Iterator[bytes], size: int = saveload.CHUNK) -> Iterator[bytes]:
    """Many small pieces (tar headers) joined into messages of about ``size`` bytes."""
    buf = bytearray()
    for c in chunks:
        buf += c
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def volume_to_proto(v: volumes_mod.Volume) -> types_pb2.Volume:
    return types_pb2.Volume(name=v.name, driver=v.driver, mountpoint=v.mountpoint, created=timestamp(v.created),
                            labels=v.labels, scope="local", options=v.options, anonymous=v.anonymous,
                            ref_count=v.ref_count, size=v.size)


class VolumeServicer(graph_pb2_grpc.VolumeServiceServicer):
    def __init__(self, store: volumes_mod.VolumeStore):
        self.store = store

    def CreateVolume(self, request: graph_pb2.CreateVolumeRequest,
                     context: grpc.ServicerContext) -> graph_pb2.CreateVolumeResponse:
        with grpcerr.handle(context):
            v = self.store.create(request.name, dict(request.labels), request.driver, dict(request.driver_opts))
            return graph_pb2.CreateVolumeResponse(volume=volume_to_proto(self.store.get(v.name)))

    def ListVolumes(self, request: graph_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> graph_pb2.ListVolumesResponse:
        with grpcerr.handle(context):
            vols = self.store.list([(f.key, f.value) for f in request.filters], with_size=request.with_size)
            return graph_pb2.ListVolumesResponse(volumes=[volume_to_proto(v) for v in vols])

    def GetVolume(self, request: graph_pb2.GetVolumeRequest,
                  context: grpc.ServicerContext) -> graph_pb2.GetVolumeResponse:
        with grpcerr.handle(context):
            return graph_pb2.GetVolumeResponse(volume=volume_to_proto(self.store.get(request.name)))

    def RemoveVolume(self, request: graph_pb2.RemoveVolumeRequest,
                     context: grpc.ServicerContext) -> graph_pb2.RemoveVolumeResponse:
        with grpcerr.handle(context):
            self.store.remove(request.name, force=request.force)
            return graph_pb2.RemoveVolumeResponse()

    def PruneVolumes(self, request: graph_pb2.PruneVolumesRequest,
                     context: grpc.ServicerContext) -> graph_pb2.PruneVolumesResponse:
        with grpcerr.handle(context):
            names, size = self.store.prune(request.all, [(f.key, f.value) for f in request.filters])
            return graph_pb2.PruneVolumesResponse(names=names, space_reclaimed=size)
