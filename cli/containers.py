"""Container commands: create, start, run, ps, logs, stop, kill, rm, wait."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from skiff.cli import attach, exits, interactive, runopts
from skiff.cli import format as fmt
from skiff.cli.args import add_command, parse_bool, split_kv

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from skiff.api.v1 import api_pb2
    from skiff.cli.client import Client

_STATUS_PREFIX = "CONTAINER_STATUS_"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "create", cmd_create, "Create a new container", run_like=True, add_help=False,
                    usage="skiff create [OPTIONS] IMAGE [COMMAND] [ARG...]")
    runopts.add_flags(p)

    p = add_command(sub, "run", cmd_run, "Run a command in a new container", run_like=True, add_help=False,
                    usage="skiff run [OPTIONS] IMAGE [COMMAND] [ARG...]")
    p.add_argument("-d", "--detach", action="store_true", help="run container in background and print its ID")
    p.add_argument("-a", "--attach", action="append", default=[], metavar="STDIN|STDOUT|STDERR",
                   help="attach to STDIN, STDOUT or STDERR (default: STDOUT and STDERR)")
    p.add_argument("--sig-proxy", type=parse_bool, default=True, metavar="BOOL",
                   help="proxy received signals to the process (default true)")
    runopts.add_flags(p)

    p = add_command(sub, "start", cmd_start, "Start one or more stopped containers", run_like=True)
    p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach container's STDIN")
    p.add_argument("--detach-keys", default="", type=interactive.check_detach_keys,
                   help="override the key sequence for detaching a container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = add_command(sub, "ps", cmd_ps, "List containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions (key=value)")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.add_argument("-n", "--last", type=int, default=-1, help="show n last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true", help="show the latest created container (includes all "
                   "states)")
    p.add_argument("--format", default="", help="format output using a custom template: 'table', "
                   "'table TEMPLATE', 'json', or a Go template (fields: ID, Image, Command, CreatedAt, RunningFor, "
                   "Ports, State, Status, Size, Names, Labels, Mounts, Networks, LocalVolumes; .Label \"key\")")

    p = add_command(sub, "logs", cmd_logs, "Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("-n", "--tail", default="all", help='number of lines to show from the end (default "all")')
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--since", default="",
                   help="show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)")
    p.add_argument("--until", default="",
                   help="show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)")
    p.add_argument("container", metavar="CONTAINER")

    p = add_command(sub, "stop", cmd_stop, "Stop one or more running containers")
    p.add_argument("-t", "--time", "--timeout", dest="timeout", type=int, default=None,
                   help="seconds to wait before killing the container (default 10)")
    p.add_argument("-s", "--signal", default="", help="signal to send to the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = add_command(sub, "kill", cmd_kill, "Kill one or more running containers")
    p.add_argument("-s", "--signal", default="", help='signal to send to the container (default "KILL")')
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = add_command(sub, "rm", cmd_rm, "Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="force the removal of a running container")
    p.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes")
    p.add_argument("-l", "--link", action="store_true", help="remove the specified link")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = add_command(sub, "wait", cmd_wait, "Block until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


# --- create, start, run ------------------------------------------------------------


def _create(client: Client, args: argparse.Namespace) -> str:
    from skiff.common.errors import IMAGE_NOT_FOUND, NotFound

    request = runopts.build_request(args, os.environ)
    cidfile = getattr(args, "cidfile", "")
    if cidfile and os.path.exists(cidfile):
        raise exits.CLIError(f"Container ID file found, make sure the other container isn't running or delete "
                             f"{cidfile}")
    policy = getattr(args, "pull", "missing")
    progress = open(os.devnull, "w") if getattr(args, "quiet", False) else sys.stderr  # noqa: SIM115
    try:
        if policy == "always":
            from skiff.cli import images

            images.pull(client, args.image, getattr(args, "platform", "") or "", progress)
        try:
            with client.translated():
                resp = client.containers.CreateContainer(request, timeout=60)
        except NotFound as err:
            if err.reason != IMAGE_NOT_FOUND or policy != "missing":
                raise
            # As the Docker CLI does, client-side: pull the missing image, then create again.
            from skiff.cli import images

            name = args.image if "@" in args.image or images._split_tag(args.image)[1] != "<none>" \
                else args.image + ":latest"
            print(f"Unable to find image '{name}' locally", file=progress)
            images.pull(client, args.image, getattr(args, "platform", "") or "", progress)
            with client.translated():
                resp = client.containers.CreateContainer(request, timeout=60)
    finally:
        if progress is not sys.stderr:
            progress.close()
    if cidfile:
        try:
            with open(cidfile, "x") as f:
                f.write(resp.id)
        except OSError as err:
            raise exits.CLIError(f"failed to write the container ID to the file: {err}") from None
    for warning in resp.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return resp.id


def _start(client: Client, container: str, remove_on_failure: bool = False) -> None:
    """Start; with ``remove_on_failure`` (``run --rm``) make sure a container that
    could not start does not stay behind (the gateway removes it too)."""
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import SkiffError

    try:
        with client.translated():
            client.containers.StartContainer(api_pb2.StartContainerRequest(container=container), timeout=60)
    except SkiffError:
        if remove_on_failure:
            _quietly(lambda: client.containers.RemoveContainer(
                api_pb2.RemoveContainerRequest(container=container, force=True), timeout=30))
        raise


def _wait(client: Client, container: str, condition: int) -> api_pb2.WaitContainerResponse:
    from skiff.api.v1 import api_pb2

    with client.translated():
        request = api_pb2.WaitContainerRequest(container=container)
        request.condition = condition  # type: ignore[assignment]  # an enum value is an int
        return client.containers.WaitContainer(request)


def _open_attach(client: Client, container: str, inp: interactive.Input | None = None,
                 streams: set[str] | None = None, remove: bool = False) -> tuple[Any, tuple[Any, ...]]:
    """Open the attach stream. Done before StartContainer (as Docker does) so that no
    output is lost and a fast ``--rm`` container cannot be removed before we attach;
    the gateway holds an attach to a created container until it starts. Without stdin,
    the gateway is asked to start it (options.start); the stream's initial metadata says
    whether it did (empty when the attach or the start failed)."""
    if inp is not None:
        requests = inp.requests()
    else:
        requests = attach.attach_options(container, await_start=True, start=True, await_removed=remove)
    if streams:  # run -a: only the chosen output streams
        requests = _only(requests, "stdout" in streams, "stderr" in streams)
    responses = client.containers.AttachContainer(requests)
    metadata = responses.initial_metadata()  # the gateway has registered the stream: safe to start
    return responses, tuple(metadata or ())


def _noting_removal(responses: Iterator[Any], removed: list[bool] | None) -> Iterator[Any]:
    for resp in responses:
        if removed is not None and resp.WhichOneof("part") == "exit" and resp.exit.removed:
            removed.append(True)
        yield resp


def _only(requests: Iterator[Any], stdout: bool, stderr: bool) -> Iterator[Any]:
    first = next(requests)
    first.options.stdout, first.options.stderr = stdout, stderr
    yield first
    yield from requests


def _start_attached(client: Client, container: str, sig_proxy: bool, remove_on_failure: bool = False,
                    inp: interactive.Input | None = None, streams: set[str] | None = None,
                    removed: list[bool] | None = None) -> int:
    """Attach, start, stream output until the exit message; the container's exit code.

    With ``inp`` (``-i``/``-t``): stdin and terminal sizes go up the same stream; a
    detach (the detach keys) returns 0 and leaves the container running. ``removed`` gets
    True when the exit status says the container is already gone (options.await_removed)."""
    from skiff.api.v1 import api_pb2

    responses, metadata = _open_attach(client, container, inp, streams, remove_on_failure)
    started = ("skiff-attach-start", "1") in metadata
    try:
        if inp is None and ("skiff-attached", "1") not in metadata:  # the attach or the gateway's start failed
            if remove_on_failure:
                _quietly(lambda: client.containers.RemoveContainer(
                    api_pb2.RemoveContainerRequest(container=container, force=True), timeout=30))
            with client.translated():
                next(responses)  # raises the start's error
        if not started:
            _start(client, container, remove_on_failure)
    except BaseException:
        responses.cancel()
        if inp is not None:
            inp.close()
        raise
    terminal = inp.terminal() if inp is not None else contextlib.nullcontext()
    # `-a stdin` alone: no output shown (the gateway reads "neither" as "both")
    show = not streams or bool(streams & {"stdout", "stderr"})
    with terminal, attach.signal_proxy(client, container, sig_proxy), client.translated():
        try:
            code, detached = interactive.stream(_noting_removal(responses, removed), show)
        finally:
            responses.cancel()  # a no-op once the stream has ended
            if inp is not None:
                inp.close()
    if detached:
        interactive.detached_message()
        return 0
    if code is None:  # the stream ended early (gateway restarted?): ask for the status
        resp = _wait(client, container, api_pb2.WAIT_CONDITION_NOT_RUNNING)
        if resp.error:
            raise exits.CLIError(f"Error response from daemon: {resp.error}", exits.ENGINE_FAILED)
        code = resp.exit_code
    return code


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    print(_create(client, args))
    return 0


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.common.errors import NotFound

    streams = _attach_streams(args.attach)
    if streams and args.detach:
        raise exits.Usage("Conflicting options: -a and -d")
    # -i without -a STDIN (when -a is given): the container's stdin is open, but not attached.
    attach_stdin = args.interactive and (not streams or "stdin" in streams)
    interactive.check_tty(attach_stdin and not args.detach, args.tty)
    cid = _create(client, args)
    if args.detach:
        _start(client, cid, args.rm)
        print(cid)
        return 0
    if streams and not streams & {"stdout", "stderr"}:
        print(cid, flush=True)  # as Docker, when no output stream is attached
    inp = None
    if attach_stdin or args.tty:
        inp = interactive.container_input(cid, request_config(args), stdin=attach_stdin,
                                          detach_keys=args.detach_keys, logs=True, await_start=True)
    removed: list[bool] = []
    code = _start_attached(client, cid, args.sig_proxy and not args.tty, args.rm, inp, streams, removed)
    if args.rm and not removed:
        # The daemon removes it; wait so that `ps -a` right after no longer shows it.
        try:
            _wait(client, cid, api_pb2.WAIT_CONDITION_REMOVED)
        except NotFound:
            pass
    return code


def _attach_streams(values: list[str]) -> set[str]:
    """``-a STDIN|STDOUT|STDERR`` (any case, repeatable); empty: Docker's default (stdout and stderr)."""
    streams = {v.lower() for v in values}
    bad = streams - {"stdin", "stdout", "stderr"}
    if bad:
        raise exits.Usage(f"invalid argument \"{sorted(bad)[0]}\" for \"-a, --attach\" flag: "
                          "valid streams are STDIN, STDOUT and STDERR")
    return streams


def request_config(args: argparse.Namespace) -> Any:
    """What run's attach needs of the container's config: its tty and open_stdin."""
    from skiff.types.v1 import types_pb2

    return types_pb2.ContainerConfig(tty=args.tty, open_stdin=args.interactive)


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # best effort clean-up; the original error is what matters
        pass


def cmd_start(client: Client, args: argparse.Namespace) -> int:
    from skiff.common.errors import SkiffError

    if args.attach or args.interactive:
        args.attach = True
        if len(args.containers) > 1:
            raise exits.Usage("you cannot start and attach multiple containers at once")
        from skiff.api.v1 import api_pb2

        with client.translated():  # the container's tty and open_stdin decide the session
            c = client.containers.InspectContainer(
                api_pb2.InspectContainerRequest(container=args.containers[0]), timeout=60).container
        inp: interactive.Input | None = interactive.container_input(
            c.id, c.config, stdin=args.interactive, detach_keys=args.detach_keys, logs=True, await_start=True)
        assert inp is not None
        interactive.check_tty(inp.stdin, inp.tty)
        tty = inp.tty
        if not (inp.stdin or inp.tty):
            inp = None  # output only, as before
        return _start_attached(client, args.containers[0], not tty, inp=inp)
    failed: list[str] = []
    code = 0
    for name in args.containers:
        try:
            _start(client, name)
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            failed.append(name)
            code = exits.START_FAILURES.get(err.reason, exits.ENGINE_FAILED)
            continue
        print(name)
    if failed:
        print(f"Error: failed to start containers: {', '.join(failed)}", file=sys.stderr)
    return code


# --- ps ----------------------------------------------------------------------------


def _ts(t: Timestamp) -> float | None:
    """Epoch seconds, or None for an unset timestamp."""
    if t.seconds == 0 and t.nanos == 0:
        return None
    return t.seconds + t.nanos / 1e9


def _ports(c: api_pb2.Container) -> str:
    """PORTS as Docker shows it: only while running."""
    if status_word(c) != "running":
        return ""
    published = [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in c.network_settings.ports]
    return fmt.ports(published, c.config.exposed_ports)


def status_word(c: api_pb2.Container) -> str:
    from skiff.types.v1 import types_pb2

    name = types_pb2.ContainerStatus.Name(c.state.status)
    return name.removeprefix(_STATUS_PREFIX).lower() if name != "CONTAINER_STATUS_UNSPECIFIED" else "created"


def health_suffix(c: api_pb2.Container) -> str:
    """Docker's ``(healthy)``, ``(unhealthy)``, ``(health: starting)`` after ``Up ...``."""
    from skiff.cli.inspect import health_word

    if status_word(c) != "running" or not c.state.HasField("health"):
        return ""
    word = health_word(c.state.health.status)
    return {"starting": " (health: starting)", "": ""}.get(word, f" ({word})")


def command_of(c: api_pb2.Container) -> str:
    """Docker's COMMAND: the path and its arguments joined by spaces."""
    return " ".join([c.path, *c.args]) if c.args else c.path


def _names(containers: list[api_pb2.Container]) -> dict[str, list[str]]:
    """Each container's names: its own, then ``parent/alias`` for each link to it."""
    names = {c.id: [c.name.lstrip("/")] for c in containers}
    seen = set()
    for c in containers:
        for link in c.links:
            key = (link.parent_id, link.child_id, link.name)
            if key in seen or link.child_id not in names or link.parent_id not in names:
                continue
            seen.add(key)
            names[link.child_id].append(f"{names[link.parent_id][0]}/{link.name}")
    return names


def ps_rows(containers: list[api_pb2.Container], no_trunc: bool, now: float) -> list[list[str]]:
    names = _names(containers)
    rows = []
    for c in containers:
        command = command_of(c)
        image = c.image or c.image_id
        if not no_trunc:
            command = fmt.ellipsis(command, 20)
            if image.startswith("sha256:"):
                image = fmt.short_id(image)
        created = _ts(c.created)
        state = c.state
        status = fmt.container_status(status_word(c), state.exit_code, _ts(state.started_at),
                                      _ts(state.finished_at), now)
        status += health_suffix(c)
        rows.append([
            c.id if no_trunc else fmt.short_id(c.id),
            image,
            fmt.go_quote(command),
            fmt.ago(created, now) if created is not None else "",
            status,
            _ports(c),
            ",".join(names[c.id]) if no_trunc else names[c.id][0],
        ])
    return rows


#: ``ps --format`` fields and their column names (Docker's)
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
              "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
              "LocalVolumes": "LOCAL VOLUMES"}
PS_TABLE = "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def _ps_formatted(found: list[api_pb2.Container], no_trunc: bool, template: str, size: bool) -> str:
    from skiff.cli import listformat

    items = []
    for c, row in zip(found, ps_rows(found, no_trunc, time.time()), strict=True):
        mounts = [m.name or m.source for m in c.mounts if m.type != "tmpfs"]
        network = c.host_config.network_mode or c.network_settings.network_mode
        items.append({
            "Command": row[2], "CreatedAt": listformat.created_at(c.created.seconds), "ID": row[0],
            "Image": row[1], "Labels": listformat.labels_text(c.config.labels),
            "LocalVolumes": str(sum(1 for m in c.mounts if m.type == "volume")),
            "Mounts": ",".join(m if no_trunc else m[:15] for m in mounts), "Names": row[6],
            "Networks": "bridge" if network in ("", "default") else network, "Ports": row[5],
            "RunningFor": row[3],
            "Size": f"{fmt.human_size(c.size_rw)} (virtual {fmt.human_size(c.size_root_fs)})" if size else "0B",
            "State": status_word(c), "Status": row[4]})
    default = PS_TABLE + ("\t{{.Size}}" if size else "")
    return listformat.format_list(template, default, items, PS_HEADERS)


def cmd_ps(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2
    from skiff.types.v1 import types_pb2

    filters = [types_pb2.Filter(key=k, value=v) for k, v in split_kv(args.filter, "filter")]
    template = getattr(args, "format", "")
    # Docker computes sizes for a template that shows them
    size = getattr(args, "size", False) or ".Size" in template
    last = 1 if getattr(args, "latest", False) else getattr(args, "last", -1)
    with client.translated():
        resp = client.containers.ListContainers(api_pb2.ListContainersRequest(
            all=args.all or last >= 0, filters=filters, size=size), timeout=60)
    found = sorted(resp.containers, key=lambda c: (c.created.seconds, c.created.nanos), reverse=True)
    if last >= 0:
        found = found[:last]
    if args.quiet:
        sys.stdout.write("".join(f"{c.id if args.no_trunc else fmt.short_id(c.id)}\n" for c in found))
        return 0
    if template:
        sys.stdout.write(_ps_formatted(found, args.no_trunc, template, size))
        return 0
    header = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    rows = ps_rows(found, args.no_trunc, time.time())
    if getattr(args, "size", False):  # Docker's SIZE column: "12B (virtual 1.2MB)"
        header.append("SIZE")
        for row, c in zip(rows, found, strict=True):
            row.append(f"{fmt.human_size(c.size_rw)} (virtual {fmt.human_size(c.size_root_fs)})")
    sys.stdout.write(fmt.table(header, rows))
    return 0


# --- logs --------------------------------------------------------------------------


_GO_DURATION = re.compile(r"^[-+]?(?:\d*\.?\d+(?:ns|us|µs|ms|s|m|h))+$")
_GO_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_timestamp(text: str, now_ns: int) -> tuple[int, int]:
    """Docker's ``--since``/``--until`` (timetypes.GetTimestamp) -> (seconds, nanos) since the epoch.

    A Go duration (``10m``, ``1h30m``) is that long before now; RFC 3339 dates and
    times (``2013-01-02``, ``2013-01-02T13:23``, ``...:37.5Z``, ``+02:00``), in local
    time without a zone; or a Unix timestamp ``seconds[.nanoseconds]``.
    """
    if text != "0" and _GO_DURATION.match(text):
        sign = -1 if text.startswith("-") else 1
        total = sum(int(float(n) * _GO_UNIT_NS[u]) for n, u in re.findall(r"(\d*\.?\d+)(ns|us|µs|ms|s|m|h)", text))
        before = now_ns - sign * total
        return before // 10**9, before % 10**9
    from skiff.common.durations import parse_date_ns

    at = parse_date_ns(text)
    if at is not None:
        return at // 10**9, at % 10**9
    if "-" in text or not re.match(r"^\d+(\.\d{1,9})?$", text):
        raise ValueError(f'failed to parse value as time or duration: "{text}"')
    sec, _, frac = text.partition(".")
    return int(sec), int(frac.ljust(9, "0")) if frac else 0


def set_time_range(request: Any, args: argparse.Namespace, now_ns: int) -> None:
    """``args.since``/``args.until`` (when given) into the request's Timestamp fields of those names."""
    for name in ("since", "until"):
        text = getattr(args, name)
        if text:
            try:
                seconds, nanos = parse_timestamp(text, now_ns)
            except ValueError as err:
                raise exits.Usage(f'invalid value for "{name}": {err}') from None
            getattr(request, name).seconds, getattr(request, name).nanos = seconds, nanos


def _tail(text: str) -> int:
    if text == "all":
        return -1
    try:
        return int(text)
    except ValueError:
        raise exits.Usage(f'invalid argument "{text}" for "-n, --tail": a number or "all"') from None


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    request = api_pb2.ContainerLogsRequest(container=args.container, follow=args.follow, stdout=True,
                                           stderr=True, tail=_tail(args.tail))
    set_time_range(request, args, time.time_ns())
    with client.translated():
        for resp in client.containers.ContainerLogs(request):
            attach.write_entry(resp.entry, args.timestamps)
    return 0


# --- stop, kill, rm, wait: one call per container, each failure reported -----------


def _each(client: Client, names: list[str], call: Callable[[str], str | None]) -> int:
    """Run ``call`` for each container; print what it returns, or the daemon's error."""
    from skiff.common.errors import SkiffError

    failed = False
    for name in names:
        try:
            with client.translated():
                out = call(name)
        except SkiffError as err:
            print(f"Error response from daemon: {err.message}", file=sys.stderr)
            failed = True
            continue
        if out is not None:
            print(out, flush=True)
    return exits.FAILED if failed else 0


def cmd_stop(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def stop(name: str) -> str:
        req = api_pb2.StopContainerRequest(container=name, signal=args.signal)
        if args.timeout is not None:
            req.timeout_seconds = args.timeout
        client.containers.StopContainer(req, timeout=max(args.timeout or 10, 0) + 60)
        return name

    return _each(client, args.containers, stop)


def cmd_kill(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def kill(name: str) -> str:
        client.containers.KillContainer(api_pb2.KillContainerRequest(container=name, signal=args.signal),
                                        timeout=60)
        return name

    return _each(client, args.containers, kill)


#: References per RemoveContainers call (the gateway takes up to 10000).
_RM_BATCH = 1000


def _rm_batch(client: Client, args: argparse.Namespace) -> int | None:
    """Several containers with RemoveContainers (one call per 1000): one result per name,
    printed in order; None when the gateway has no RemoveContainers (nothing was done)."""
    import grpc

    from skiff.api.v1 import api_pb2
    from skiff.common.errors import SkiffError

    failed = False
    names = list(args.containers)
    for start in range(0, len(names), _RM_BATCH):
        chunk = names[start:start + _RM_BATCH]
        try:
            with client.translated():
                try:
                    resp = client.containers.RemoveContainers(api_pb2.RemoveContainersRequest(
                        containers=chunk, force=args.force, remove_volumes=args.volumes), timeout=300)
                except grpc.RpcError as e:
                    if start == 0 and e.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older gateway
                        return None
                    raise
        except SkiffError as err:
            for _ in chunk:
                print(f"Error response from daemon: {err.message}", file=sys.stderr, flush=True)
            failed = True
            continue
        for name, result in zip(chunk, resp.results, strict=True):
            if result.code:
                print(f"Error response from daemon: {result.message}", file=sys.stderr, flush=True)
                failed = True
            else:
                print(name, flush=True)
    return exits.FAILED if failed else 0


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    if len(args.containers) > 1 and not args.link:
        code = _rm_batch(client, args)
        if code is not None:
            return code

    def rm(name: str) -> str:
        client.containers.RemoveContainer(
            api_pb2.RemoveContainerRequest(container=name, force=args.force, remove_volumes=args.volumes,
                                           remove_link=args.link),
            timeout=90,
        )
        return name

    return _each_concurrently(client, args.containers, rm)


def _each_concurrently(client: Client, names: list[str], call: Callable[[str], str | None]) -> int:
    """As :func:`_each`, the calls made at once (up to 50 in flight, as Docker's CLI does for
    ``rm``); the output in the order of ``names``, each failure reported for its own name."""
    from concurrent.futures import ThreadPoolExecutor

    from skiff.common.errors import SkiffError

    if len(names) < 2:
        return _each(client, names, call)

    def one(name: str) -> tuple[str | None, SkiffError | None]:
        try:
            with client.translated():
                return call(name), None
        except SkiffError as err:
            return None, err

    failed = False
    with ThreadPoolExecutor(max_workers=min(50, len(names))) as pool:
        for out, err in pool.map(one, names):
            if err is not None:
                print(f"Error response from daemon: {err.message}", file=sys.stderr, flush=True)
                failed = True
            elif out is not None:
                print(out, flush=True)
    return exits.FAILED if failed else 0


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    from skiff.api.v1 import api_pb2

    def wait(name: str) -> str:
        resp = client.containers.WaitContainer(
            api_pb2.WaitContainerRequest(container=name, condition=api_pb2.WAIT_CONDITION_NOT_RUNNING))
        if resp.error:
            print(f"Error: {name}: {resp.error}", file=sys.stderr)
        return str(resp.exit_code)

    return _each(client, args.containers, wait)
