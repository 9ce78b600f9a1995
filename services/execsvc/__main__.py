"""``python -m skiff.execsvc``: the exec driver (containers' processes, cgroups, logs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from skiff.common import server
from skiff.common.errors import SkiffError

SHIM = Path(__file__).resolve().parent / "shim" / "skiff-shim"


def _start_slots(runtime: object, shim: Path, size: int) -> None:
    """Warm slots (slots.py) when asked for and the cgroups allow; else every start is cold."""
    import logging

    from skiff.execsvc import slots
    from skiff.execsvc.runtime import Runtime

    assert isinstance(runtime, Runtime)
    reason = slots.unsupported(runtime.cgroups)
    if reason is not None:
        logging.getLogger("skiff.execsvc").info("warm slots off: %s", reason)
        return
    pool = slots.SlotPool(runtime.cgroups, shim, size=size)
    pool.remove_leftovers()  # an earlier execsvc's, even with the pool off now
    if size > 0:
        runtime.slots = pool
        pool.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff-execsvc", description=__doc__)
    server.add_common_arguments(parser, default_socket="unix://<exec-root>/execsvc.sock")
    parser.add_argument("--shim", type=Path, default=SHIM, help="the skiff-shim binary (built by `make shim`)")
    parser.add_argument("--cgroup-parent", default=os.environ.get("SKIFF_CGROUP_PARENT") or "skiff",
                        help="cgroup under which containers are created ($SKIFF_CGROUP_PARENT; default skiff)")
    parser.add_argument("--userns-remap", default="", metavar="USER[:GROUP]",
                        help="map containers' root to USER's range in /etc/subuid (and GROUP's in /etc/subgid)")
    parser.add_argument("--warm-slots", type=int, default=None, metavar="N",
                        help="container starts kept ready (cgroups and a standby shim each; cgroup v1; "
                             "$SKIFF_WARM_SLOTS; default 4; 0: off)")
    args = parser.parse_args(argv)
    server.setup_logging("execsvc", args.log_level, args.debug)

    from skiff.exec.v1 import exec_pb2_grpc
    from skiff.execsvc import slots
    from skiff.execsvc.cgroups import detect
    from skiff.execsvc.runtime import Runtime
    from skiff.execsvc.servicer import ExecServicer, Tasks

    if not args.shim.is_file():
        print(f"execsvc: {args.shim} is missing: run `make shim`", file=sys.stderr)
        return 1
    listen = args.listen or [f"unix://{args.exec_root}/execsvc.sock"]
    try:
        runtime = Runtime(args.exec_root, args.shim, cgroups=detect(parent=args.cgroup_parent))
        if args.userns_remap:
            from skiff.execsvc import userns

            runtime.userns = userns.parse(args.userns_remap)
        tasks = Tasks(runtime, args.data_root)
        svc = server.Service("execsvc", listen)
        servicer = ExecServicer(tasks)
        svc.add(exec_pb2_grpc.add_ExecServiceServicer_to_server, servicer, "skiff.exec.v1.ExecService")
        svc.on_stop.append(servicer.exits.close)  # WatchTasks streams end at once
        _start_slots(runtime, args.shim, slots.configured_size() if args.warm_slots is None else args.warm_slots)
        try:
            svc.run_until_signal()
        finally:
            if runtime.slots is not None:
                runtime.slots.close()  # standby shims exit, slot groups go
        if not runtime.list():  # no container left: give back the parent cgroup too
            runtime.cgroups.remove_parent_if_empty()
    except SkiffError as err:
        print(f"execsvc: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
