"""The flags of ``create`` and ``run``, and the CreateContainerRequest they make.

Docker's rules: everything after IMAGE is the command (flags there belong to
the command); ``-e KEY`` takes KEY's value from the client's environment and is
dropped when unset; ``--entrypoint ""`` clears the image's entrypoint; ``-m``
takes go-units sizes and refuses less than 6 MiB.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from skiff.cli import exits, health, lifecycle
from skiff.cli import format as fmt
from skiff.cli.args import split_kv

if TYPE_CHECKING:
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

#: Docker's smallest memory limit (``Minimum memory limit allowed is 6MB``).
MIN_MEMORY = 6 * 1024 * 1024


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="", help="assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set environment variables (KEY alone: the value in this environment)")
    p.add_argument("--env-file", action="append", default=[], help="read in a file of environment variables")
    p.add_argument("--label-file", action="append", default=[], help="read in a line delimited file of labels")
    p.add_argument("--cidfile", default="", help="write the container ID to the file")
    p.add_argument("--pull", default="missing", choices=["always", "missing", "never"],
                   help='pull image before running ("always", "missing", "never")')
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the pull output")
    p.add_argument("--platform", default="", help="set platform if server is multi-platform capable")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("--group-add", action="append", default=[], help="add additional groups to join")
    p.add_argument("-u", "--user", default="", help="username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-h", "--hostname", default="", help="container host name")
    p.add_argument("--entrypoint", default=None, help="overwrite the default ENTRYPOINT of the image")
    p.add_argument("--network", "--net", dest="network", default="", help="connect a container to a network")
    p.add_argument("--network-alias", "--net-alias", dest="network_alias", action="append", default=[],
                   help="add network-scoped alias for the container")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("--mac-address", dest="mac_address", default="",
                   help="container MAC address (e.g., 92:d0:c6:0a:29:33)")
    p.add_argument("-m", "--memory", default=None, help="memory limit (e.g. 64m, 1g)")
    p.add_argument("--pids-limit", type=int, default=0, help="tune container pids limit (-1 for unlimited)")
    p.add_argument("-l", "--label", action="append", default=[], help="set meta data on a container")
    p.add_argument("--link", action="append", default=[], help="add link to another container (name:alias)")
    p.add_argument("--rm", action="store_true", help="automatically remove the container when it exits")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOSTPORT:PORT[/PROTO]",
                   help="publish a container's port(s) to the host")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish all exposed ports to random ports")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="expose a port without publishing it")
    p.add_argument("--dns", action="append", default=[], help="set custom DNS servers")
    p.add_argument("--dns-search", action="append", default=[], help="set custom DNS search domains")
    p.add_argument("--dns-option", action="append", default=[], help="set DNS options")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a custom host-to-IP mapping (host:ip, or host:host-gateway)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("--detach-keys", default="", type=_detach_keys,
                   help="override the key sequence for detaching a container")
    lifecycle.add_run_flags(p)
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:OPTS]",
                   help="bind mount a volume (host path or volume name; /ctr alone: anonymous volume)")
    p.add_argument("--mount", action="append", default=[], metavar="type=...,source=...,target=...",
                   help="attach a filesystem mount to the container (bind, volume, tmpfs)")
    p.add_argument("--volumes-from", action="append", default=[], metavar="CONTAINER[:ro|rw]",
                   help="mount volumes from the specified container(s)")
    add_driver_flags(p)
    health.add_run_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def _console_size(host: types_pb2.HostConfig) -> None:
    """As Docker's CLI: the container's terminal starts with our size (no 0x0 until the first resize)."""
    from skiff.cli import interactive

    size = interactive.terminal_size()
    if size is not None:
        host.console_size.rows, host.console_size.cols = size


def _detach_keys(text: str) -> str:
    from skiff.cli import interactive

    return interactive.check_detach_keys(text)


def parse_memory(text: str | None) -> int:
    if text is None or text == "":
        return 0
    try:
        value = fmt.parse_ram(text)
    except ValueError as err:
        raise exits.Usage(f'invalid argument "{text}" for "-m, --memory" flag: {err}') from None
    if 0 < value < MIN_MEMORY:
        raise exits.Usage("Minimum memory limit allowed is 6MB")
    return value


def read_lines_file(path: str, what: str) -> list[str]:
    """Docker's ``--env-file``/``--label-file``: one entry per line; blank lines and ``#`` comments
    skipped; leading spaces trimmed; a name with whitespace refused."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise exits.Usage(f"open {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise exits.Usage(f"{path}: {what} file is not UTF-8") from None
    out = []
    for line in text.splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        name = line.split("=", 1)[0]
        if not name:
            raise exits.Usage(f"no variable name on line '{line}'" if what == "env" else f"invalid label '{line}'")
        if any(c.isspace() for c in name):
            raise exits.Usage(f"variable '{name}' contains whitespaces")
        out.append(line)
    return out


def expand_env(items: list[str], environ: Mapping[str, str]) -> list[str]:
    """``KEY=value`` kept; ``KEY`` alone takes the client's value, or is dropped."""
    out = []
    for item in items:
        if "=" in item:
            if item.startswith("="):
                raise exits.Usage(f"invalid environment variable: {item}")
            out.append(item)
        elif item in environ:
            out.append(f"{item}={environ[item]}")
    return out


def parse_port(text: str) -> tuple[int, str]:
    """``80`` or ``80/udp`` -> (80, "udp")."""
    port, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if not port.isdigit() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp"):
        raise exits.Usage(f"invalid port {text!r}: want PORT[/tcp|udp] with 1 <= PORT <= 65535")
    return int(port), proto


def parse_publish(text: str) -> tuple[str, int, int, str]:
    """Docker's ``-p``: ``[ip:][hostPort:]containerPort[/proto]`` -> (ip, host port, port, proto)."""
    spec, slash, proto = text.partition("/")
    parts = spec.rsplit(":", 2)
    ip, host = "", ""
    if len(parts) == 3:
        ip, host, cport = parts
        ip = ip.strip("[]")
    elif len(parts) == 2:
        host, cport = parts
    else:
        cport = parts[0]
    port, proto = parse_port(cport + (slash + proto if slash else ""))
    if host and (not host.isdigit() or not 0 < int(host) < 65536):
        raise exits.Usage(f"invalid host port {host!r} in {text!r}")
    if ip:
        import ipaddress

        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise exits.Usage(f"invalid IP address {ip!r} in {text!r}") from None
    return ip, int(host or 0), port, proto


def build_request(args: argparse.Namespace, environ: Mapping[str, str]) -> api_pb2.CreateContainerRequest:
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

    config = types_pb2.ContainerConfig(
        image=args.image,
        env=expand_env([line for f in getattr(args, "env_file", []) for line in read_lines_file(f, "env")]
                       + args.env, environ),
        working_dir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        labels=dict(split_kv([line for f in getattr(args, "label_file", []) for line in read_lines_file(f, "label")]
                             + args.label, "label")),
        tty=args.tty,
        open_stdin=args.interactive,
        # As Docker's run: an attached -i closes the container's stdin at the client's EOF.
        stdin_once=args.interactive and getattr(args, "detach", True) is False,
    )
    published = [parse_publish(x) for x in args.publish]
    exposed: list[str] = []
    for port, proto in [parse_port(x) for x in args.expose] + [(b[2], b[3]) for b in published]:
        if f"{port}/{proto}" not in exposed:
            exposed.append(f"{port}/{proto}")
    config.exposed_ports.extend(exposed)
    for server in args.dns:  # Docker's opts.ValidateIPAddress
        import ipaddress

        try:
            ipaddress.ip_address(server.strip())
        except ValueError:
            raise exits.Usage(f'invalid argument "{server}" for "--dns" flag: {server} is not an ip address') from None
    for item in args.add_host:
        name, sep, addr = item.partition(":")
        if not sep or not name or not addr:
            raise exits.Usage(f"invalid argument {item!r} for \"--add-host\" flag: want host:ip")
    if args.command:
        config.cmd.CopyFrom(types_pb2.StringList(values=args.command))
    if args.entrypoint is not None:
        # Presence matters: an empty list clears the image's entrypoint.
        config.entrypoint.CopyFrom(types_pb2.StringList(values=[args.entrypoint] if args.entrypoint else []))
    host = types_pb2.HostConfig(
        network_mode=args.network,
        memory_bytes=parse_memory(args.memory),
        pids_limit=max(args.pids_limit, 0),
        auto_remove=args.rm,
        links=args.link,
        port_bindings=[types_pb2.PortBinding(host_ip=ip, host_port=hp, container_port=cp, protocol=proto)
                       for ip, hp, cp, proto in published],
        publish_all_ports=args.publish_all,
        dns=args.dns,
        group_add=getattr(args, "group_add", []),
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        extra_hosts=args.add_host,
        network_aliases=args.network_alias,
        ipv4_address=args.ip,
        mac_address=args.mac_address,
    )
    lifecycle.apply_run_flags(host, args)
    if args.tty:
        _console_size(host)
    apply_mount_flags(host, args)
    apply_driver_flags(host, args)
    health.apply_run_flags(config, host, args)
    return api_pb2.CreateContainerRequest(name=args.name, config=config, host_config=host)


def absolute_bind(spec: str, cwd: str) -> str:
    """``-v ./data:/data``: a relative host path (``.`` or ``..`` first) is made absolute, as
    Docker's CLI does; a bare name stays a volume name."""
    source, sep, rest = spec.partition(":")
    if sep and (source in (".", "..") or source.startswith(("./", "../"))):
        import os.path

        return os.path.normpath(os.path.join(cwd, source)) + ":" + rest
    return spec


def apply_mount_flags(host: types_pb2.HostConfig, args: argparse.Namespace) -> None:
    """``-v`` strings as given (the engine parses and validates them, as Docker's daemon);
    ``--mount`` parsed here, as Docker's client does."""
    import os

    from skiff.common import errors, mounts

    host.binds.extend(absolute_bind(v, os.getcwd()) for v in getattr(args, "volume", []))
    host.volumes_from.extend(getattr(args, "volumes_from", []))
    for text in getattr(args, "mount", []):
        try:
            host.mounts.append(mounts.parse_mount_flag(text))
        except errors.InvalidArgument as err:
            raise exits.Usage(f'invalid argument "{text}" for "--mount" flag: {err}') from None


# --- logs, namespaces, devices (issue 4) -------------------------------------------


def add_driver_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-driver", default="", help="logging driver for the container (json-file, none)")
    p.add_argument("--log-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="log driver options (max-size, max-file)")
    p.add_argument("--pid", default="", help="PID namespace to use (host)")
    p.add_argument("--ipc", default="", help="IPC mode to use (private, shareable, host, none, container:<name|id>)")
    p.add_argument("--uts", default="", help="UTS namespace to use (host)")
    p.add_argument("--userns", default="", help="user namespace to use (host: no --userns-remap)")
    p.add_argument("--cgroupns", default="",
                   help="cgroup namespace to use (host|private; default private on cgroup v2, host on v1)")
    p.add_argument("--device", action="append", default=[], metavar="HOST[:CONTAINER[:rwm]]",
                   help="add a host device to the container")


def apply_driver_flags(host: types_pb2.HostConfig, args: argparse.Namespace) -> None:
    if args.log_driver:  # unset stays absent: the engine's default applies
        host.log_config.type = args.log_driver
    for item in args.log_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise exits.Usage(f'invalid argument "{item}" for "--log-opt" flag: want key=value')
        host.log_config.config[key] = value
    host.pid_mode, host.ipc_mode, host.uts_mode, host.cgroupns_mode = args.pid, args.ipc, args.uts, args.cgroupns
    host.devices.extend(parse_device(d) for d in args.device)
    host.userns_mode = args.userns


def _device_mode(text: str) -> bool:
    return 0 < len(text) <= 3 and not set(text) - set("rwm")


def parse_device(text: str) -> types_pb2.DeviceMapping:
    """Docker's ``--device``: ``/dev/x``, ``/dev/x:rwm``, ``/dev/x:/dev/y``, ``/dev/x:/dev/y:rwm``."""
    from skiff.types.v1 import types_pb2

    parts = text.split(":")
    src, dst, mode = parts[0], "", "rwm"
    if len(parts) == 2:
        if _device_mode(parts[1]):
            mode = parts[1]
        else:
            dst = parts[1]
    elif len(parts) == 3:
        dst, mode = parts[1], parts[2]
        if not _device_mode(mode):
            raise exits.Usage(f'invalid argument "{text}" for "--device" flag: bad mode specified: {mode}')
    elif len(parts) > 3:
        raise exits.Usage(f'invalid argument "{text}" for "--device" flag: invalid device specification')
    for path in (src, dst):
        if path and not path.startswith("/"):
            raise exits.Usage(f'invalid argument "{text}" for "--device" flag: {path} is not an absolute path')
    return types_pb2.DeviceMapping(path_on_host=src, path_in_container=dst, cgroup_permissions=mode)
