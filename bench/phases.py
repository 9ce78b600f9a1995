"""Per-phase breakdown of one skiff container run, from the trace the engine records.

    .venv/bin/python bench/phases.py -H unix:///run/skiff/skiff.sock --runs 20

For bench.py: ``breakdown(host)`` runs create + start + wait + remove of ``busybox
true`` (``--network none``) through the API with a trace id (metadata
``skiff-trace-id``, see skiff.common.trace) and returns ``{phase: ms}``; ``median_breakdown``
does it ``runs`` times and takes the median of each phase; ``markdown`` renders it.
Phases are named ``<service>: <span>``; ``client: create+start+wait`` is the
client's own wall time of the three calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRACE_KEY = "skiff-trace-id"

#: The phases a reader looks for first, in the order of a run (others follow).
ORDER = [
    "client: create+start+wait",
    "apiserver: CreateContainer",
    "graphsvc: CreateContainer",
    "apiserver: StartContainer",
    "apiserver: prepare rootfs",
    "apiserver: network",
    "netsvc: CreateEndpoint",
    "apiserver: spawn, exec",
    "execsvc: StartTask",
    "execsvc: bundle",
    "execsvc: cgroups",
    "execsvc: spawn (shim, clone)",
    "container: init (set-up, execve)",
    "container: first output",
    "container: run (clone to exit)",
    "apiserver: WaitContainer",
]


class _Api:
    def __init__(self, host: str):
        sys.path.insert(0, str(ROOT / "build" / "gen"))
        from skiff.api.v1 import api_pb2, api_pb2_grpc
        from skiff.common.server import channel
        from skiff.types.v1 import types_pb2

        self.pb, self.types = api_pb2, types_pb2
        ch = channel(host)
        self.containers = api_pb2_grpc.ContainerServiceStub(ch)
        self.system = api_pb2_grpc.SystemServiceStub(ch)


_apis: dict[str, _Api] = {}


def breakdown(host: str, image: str = "busybox", cmd: tuple[str, ...] = ("true",)) -> dict[str, float]:
    """One traced create+start+wait(+remove) of ``cmd``; ``{"<service>: <phase>": ms}``.

    A phase seen more than once (e.g. several GetContainer calls) is summed.
    """
    api = _apis.get(host) or _apis.setdefault(host, _Api(host))
    pb, types = api.pb, api.types
    trace_id = os.urandom(8).hex()
    md = ((TRACE_KEY, trace_id),)
    config = types.ContainerConfig(image=image)
    config.cmd.values[:] = list(cmd)
    t0 = time.perf_counter()
    cid = api.containers.CreateContainer(pb.CreateContainerRequest(
        config=config, host_config=types.HostConfig(network_mode="none")), timeout=60, metadata=md).id
    api.containers.StartContainer(pb.StartContainerRequest(container=cid), timeout=60, metadata=md)
    api.containers.WaitContainer(pb.WaitContainerRequest(container=cid), timeout=60, metadata=md)
    wall = (time.perf_counter() - t0) * 1000
    api.containers.RemoveContainer(pb.RemoveContainerRequest(container=cid, force=True), timeout=60)
    spans = api.system.GetTrace(pb.GetTraceRequest(trace_id=trace_id), timeout=10).spans
    out: dict[str, float] = {"client: create+start+wait": wall}
    for s in spans:
        key = f"{s.service}: {s.name}"
        out[key] = out.get(key, 0.0) + s.duration_nanos / 1e6
    return out


def median_breakdown(host: str, runs: int = 20) -> dict[str, float]:
    """The median of each phase over ``runs`` traced runs (after one warm-up)."""
    breakdown(host)
    samples = [breakdown(host) for _ in range(runs)]
    keys = [k for k in ORDER if any(k in s for s in samples)]
    keys += sorted({k for s in samples for k in s} - set(keys))
    return {k: statistics.median(s.get(k, 0.0) for s in samples) for k in keys}


def markdown(phases: dict[str, float], title: str = "Breakdown of create+start+wait (median, ms)") -> str:
    lines = [f"#### {title}", "", "| phase | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in phases.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default=os.environ.get("SKIFF_HOST", "unix:///run/skiff/skiff.sock"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    print(markdown(median_breakdown(args.host, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__: list[Any] = ["breakdown", "markdown", "median_breakdown"]
