"""``skiff inspect``: low-level information as Docker's JSON, and ``--format`` templates.

Keys and shapes follow ``docker inspect`` as far as our data goes, so that
scripts written against Docker's output (``{{.State.Pid}}``, ``.[0].Id``) keep
working. Unset values are Go's zero values (``0001-01-01T00:00:00Z``, ``null``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from skiff.cli import exits
from skiff.cli import format as fmt
from skiff.cli.args import add_command

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "inspect", cmd_inspect, "Return low-level information on skiff objects")
    p.add_argument("-f", "--format", default="", help="format the output using a Go template subset")
    p.add_argument("--type", choices=["container", "image"], help="return JSON for the specified type")
    p.add_argument("names", nargs="+", metavar="NAME|ID")


def _time(t: Timestamp) -> str:
    return fmt.rfc3339nano(t.seconds, t.nanos)


def config_json(cfg: types_pb2.ContainerConfig) -> dict[str, Any]:
    return {
        "Hostname": cfg.hostname,
        "Domainname": "",
        "User": cfg.user,
        "AttachStdin": cfg.stdin_once,  # only an attached `run -i` sets it
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": cfg.tty,
        "OpenStdin": cfg.open_stdin,
        "StdinOnce": cfg.stdin_once,
        "Env": list(cfg.env) or None,
        "Cmd": list(cfg.cmd.values) if cfg.HasField("cmd") else None,
        "ExposedPorts": {(p if "/" in p else f"{p}/tcp"): {} for p in cfg.exposed_ports} or None,
        "Image": cfg.image,
        "Volumes": None,
        "WorkingDir": cfg.working_dir,
        "Entrypoint": list(cfg.entrypoint.values) if cfg.HasField("entrypoint") else None,
        "OnBuild": None,
        "Labels": dict(sorted(cfg.labels.items())),
        **({"Healthcheck": healthcheck_json(cfg.healthcheck)} if cfg.HasField("healthcheck") else {}),
        **({"StopSignal": cfg.stop_signal} if cfg.stop_signal else {}),
        **({"StopTimeout": cfg.stop_timeout} if cfg.HasField("stop_timeout") else {}),
    }


def healthcheck_json(hc: types_pb2.Healthcheck) -> dict[str, Any]:
    out: dict[str, Any] = {"Test": list(hc.test)}
    for key, value in (("Interval", hc.interval_ns), ("Timeout", hc.timeout_ns),
                       ("StartPeriod", hc.start_period_ns), ("Retries", hc.retries)):
        if value:
            out[key] = value
    return out


def health_word(status: int) -> str:
    from skiff.types.v1 import types_pb2

    name = types_pb2.HealthStatus.Name(status)
    return "" if status == 0 else name.removeprefix("HEALTH_STATUS_").lower()


def health_json(h: types_pb2.Health) -> dict[str, Any]:
    """Docker's State.Health."""
    return {
        "Status": health_word(h.status),
        "FailingStreak": h.failing_streak,
        "Log": [{"Start": _time(r.start), "End": _time(r.end), "ExitCode": r.exit_code, "Output": r.output}
                for r in h.log],
    }


def container_json(c: api_pb2.Container) -> dict[str, Any]:
    from skiff.cli.containers import status_word

    status = status_word(c)
    state = c.state
    name = "/" + c.name.lstrip("/")
    links = []
    live = {lk.name for lk in c.links}  # the GraphDB's edges: what `rm --link` and `rm` left
    for link in c.host_config.links:
        target, _, alias = link.partition(":")
        alias = alias or target.lstrip("/")
        if alias in live:
            links.append(f"/{target.lstrip('/')}:{name}/{alias}")
    return {
        "Id": c.id,
        "Created": _time(c.created),
        "Path": c.path,
        "Args": list(c.args),
        "State": {
            "Status": status,
            "Running": status in ("running", "paused", "restarting"),
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": state.oom_killed,
            "Dead": status == "dead",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": _time(state.started_at),
            "FinishedAt": _time(state.finished_at),
            **({"Health": health_json(state.health)} if state.HasField("health") else {}),
        },
        "Image": c.image_id,
        "RestartCount": c.restart_count,
        "LogPath": c.log_path,
        "Name": name,
        "Driver": c.rootfs.type,
        "HostConfig": {
            "NetworkMode": c.host_config.network_mode or c.network_settings.network_mode,
            "Memory": c.host_config.memory_bytes,
            "PidsLimit": c.host_config.pids_limit or None,
            "AutoRemove": c.host_config.auto_remove,
            "Links": links or None,
            "Binds": list(c.host_config.binds) or None,
            "VolumesFrom": list(c.host_config.volumes_from) or None,
            "GroupAdd": list(c.host_config.group_add) or None,
            **driver_host_json(c.host_config),
            **_more_host_config(c.host_config),
        },
        "Config": config_json(c.config),
        "NetworkSettings": network_json(c),
        "Mounts": mounts_json(c),
    }


def mounts_json(c: api_pb2.Container) -> list[dict[str, Any]]:
    """Docker's Mounts: one entry per bind, volume and tmpfs mount."""
    out = []
    for m in c.mounts:
        entry: dict[str, Any] = {"Type": m.type}
        if m.type == "volume":
            entry["Name"] = m.name
        entry |= {"Source": m.source, "Destination": m.destination}
        if m.type == "volume":
            entry["Driver"] = m.driver or "local"
        entry |= {"Mode": m.mode if m.type != "volume" or m.mode else "z", "RW": not m.read_only,
                  "Propagation": m.propagation if m.type == "bind" else ""}
        out.append(entry)
    return out


def driver_host_json(hc: types_pb2.HostConfig) -> dict[str, Any]:
    """HostConfig's log, namespace and device fields, as Docker names them."""
    return {
        "LogConfig": {"Type": hc.log_config.type or "json-file", "Config": dict(hc.log_config.config)},
        "PidMode": hc.pid_mode,
        "IpcMode": hc.ipc_mode or "private",
        "UTSMode": hc.uts_mode,
        "UsernsMode": hc.userns_mode,
        "CgroupnsMode": hc.cgroupns_mode,
        "Devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container or d.path_on_host,
                     "CgroupPermissions": d.cgroup_permissions or "rwm"} for d in hc.devices],
    }


def _more_host_config(hc: types_pb2.HostConfig) -> dict[str, Any]:
    """Resources (as `update` leaves them), the restart policy and --init, with Docker's keys."""
    return {
        "NanoCpus": hc.nano_cpus,
        "CpuShares": hc.cpu_shares,
        "CpusetCpus": hc.cpuset_cpus,
        "MemorySwap": hc.memory_swap,
        "MemoryReservation": hc.memory_reservation,
        "BlkioWeight": hc.blkio_weight,
        "RestartPolicy": {"Name": hc.restart_policy.name or "no",
                          "MaximumRetryCount": hc.restart_policy.maximum_retry_count},
        "Init": hc.init or None,
    }


def network_json(c: api_pb2.Container) -> dict[str, Any]:
    """Docker's NetworkSettings: the bridge's fields, and Ports as {"80/tcp": [{HostIp, HostPort}]}."""
    n = c.network_settings
    ports: dict[str, Any] = {}
    for item in c.config.exposed_ports:
        ports.setdefault(item if "/" in item else f"{item}/tcp", None)
    for p in n.ports:
        key = f"{p.container_port}/{p.protocol or 'tcp'}"
        ports[key] = (ports.get(key) or []) + [{"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}]
    return {
        "Bridge": n.bridge,
        "SandboxKey": n.sandbox_key,
        "Ports": ports,
        "Gateway": n.gateway,
        "IPAddress": n.ip_address,
        "IPPrefixLen": n.ip_prefix_len,
        "MacAddress": n.mac_address,
        "GlobalIPv6Address": n.global_ipv6_address,
        "GlobalIPv6PrefixLen": n.global_ipv6_prefix_len,
        "IPv6Gateway": n.ipv6_gateway,
    }


def image_json(img: types_pb2.Image) -> dict[str, Any]:
    return {
        "Id": img.id,
        "RepoTags": list(img.repo_tags),
        "RepoDigests": list(img.repo_digests),
        "Parent": img.parent_id,
        "Comment": img.comment,
        "Created": _time(img.created),
        "Config": config_json(img.config),
        "Architecture": img.architecture,
        "Os": img.os,
        "Size": img.size,
        "RootFS": {"Type": "layers", "Layers": list(img.layers)},
    }


# --- a small subset of Go's text/template ---------------------------------------------

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_PATH = re.compile(r"^\.((?:[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


def _go_str(value: Any) -> str:
    """A value as Go's ``fmt.Print`` would show it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_str(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _lookup(obj: Any, expr: str) -> Any:
    match = _PATH.match(expr)
    if not match:
        raise exits.CLIError(f"template: unsupported expression {expr!r}")
    value = obj
    for key in (match.group(1) or "").split(".") if match.group(1) else []:
        if not isinstance(value, dict):
            raise exits.CLIError(f"template: can't evaluate field {key} in {_go_str(value)}")
        if key not in value:
            return None
        value = value[key]
    return value


def render(template: str, obj: Any) -> str:
    """``{{.A.B}}``, ``{{json .A}}``, ``{{.}}``, and literal text around them."""
    out = []
    pos = 0
    for match in _ACTION.finditer(template):
        out.append(template[pos : match.start()])
        pos = match.end()
        words = match.group(1).split()
        if len(words) == 2 and words[0] == "json":
            out.append(json.dumps(_lookup(obj, words[1]), ensure_ascii=False, separators=(",", ":")))
        elif len(words) == 1:
            out.append(_go_str(_lookup(obj, words[0])))
        else:
            raise exits.CLIError(f"template: unsupported action {{{{{match.group(1)}}}}}")
    out.append(template[pos:])
    return "".join(out)


def cmd_inspect(client: Any, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import NotFound, SkiffError

    def container(name: str) -> dict[str, Any]:
        with client.translated():
            resp = client.containers.InspectContainer(api_pb2.InspectContainerRequest(container=name), timeout=60)
        return container_json(resp.container)

    def image(name: str) -> dict[str, Any]:
        with client.translated():
            resp = client.images.InspectImage(api_pb2.InspectImageRequest(image=name), timeout=60)
        return image_json(resp.image)

    found: list[dict[str, Any]] = []
    failed = False
    for name in args.names:
        try:
            if args.type == "image":
                obj = image(name)
            else:
                try:
                    obj = container(name)
                except NotFound:
                    if args.type == "container":
                        raise
                    obj = image(name)  # Docker's order: a container first, then an image
        except NotFound:
            print(f"Error: No such {args.type or 'object'}: {name}", file=sys.stderr)
            failed = True
            continue
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            failed = True
            continue
        found.append(obj)
    if args.format:
        for obj in found:
            print(render(args.format, obj))
    else:
        print(json.dumps(found, indent=4, ensure_ascii=False))
    return exits.FAILED if failed else 0
