"""The time netsvc adds to a container start: CreateEndpoint over gRPC, as the gateway calls it.

    .venv/bin/python bench/netsvc_start.py --runs 60          # as root

Starts ``python -m skiff.netsvc`` on roots, a bridge (``skbench0``) and chains of its
own, and times ``CreateEndpoint`` from a connected client (the RPC the gateway makes
before ``StartTask``) for ``none``, ``bridge`` and ``bridge`` with one ``-p``, interleaved
so that drift on a shared machine hits every mode alike; each endpoint is deleted
(untimed for the start, timed separately) before the next. Prints the median, min and
max per mode. netsvc is stopped afterwards and leaves nothing behind.

``--baseline DIR`` (a copy of another version's ``services/netsvc``, e.g. from
``git archive``) runs that netsvc too, on a bridge of its own, interleaved with this one,
for a before/after comparison in the same minute.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from skiff.net.v1 import net_pb2, net_pb2_grpc
from skiff.types.v1 import types_pb2

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"


#: Runs netsvc with ``skiff.netsvc`` taken from another directory (the rest of skiff from here).
_LAUNCH_FROM = (
    "import sys, runpy, importlib.util; "
    "spec = importlib.util.spec_from_file_location('skiff.netsvc', {src!r} + '/__init__.py', "
    "submodule_search_locations=[{src!r}]); "
    "mod = importlib.util.module_from_spec(spec); sys.modules['skiff.netsvc'] = mod; spec.loader.exec_module(mod); "
    "sys.argv[0] = 'netsvc'; runpy.run_module('skiff.netsvc', run_name='__main__')"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--port", type=int, default=18999, help="host port published by the `-p` mode")
    ap.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                    help="another version's services/netsvc directory, run interleaved with this one")
    args = ap.parse_args()
    versions = {"": None} if args.baseline is None else {"": None, "baseline ": args.baseline.resolve()}
    base = Path(tempfile.mkdtemp(prefix="skiff-netbench-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for n, (label, src) in enumerate(versions.items()):
        root = base / f"v{n}"
        env = dict(os.environ, SKIFF_BRIDGE=f"skbench{n}")
        launch = ["-m", "skiff.netsvc"] if src is None else ["-c", _LAUNCH_FROM.format(src=str(src))]
        procs[label] = subprocess.Popen(
            [str(PY), *launch, "-H", f"unix://{root}/netsvc.sock", "--data-root", str(root / "data"),
             "--exec-root", str(root / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    modes = {
        "none": net_pb2.CreateEndpointRequest(network_mode="none", hostname="bench"),
        "bridge": net_pb2.CreateEndpointRequest(network_mode="bridge", hostname="bench"),
        "bridge -p": net_pb2.CreateEndpointRequest(network_mode="bridge", hostname="bench", port_bindings=[
            types_pb2.PortBinding(host_port=args.port, container_port=80, protocol="tcp")]),
    }
    keys = [f"{label}{mode}" for mode in modes for label in versions]
    create: dict[str, list[float]] = {k: [] for k in keys}
    delete: dict[str, list[float]] = {k: [] for k in keys}
    channels = []
    try:
        stubs = {}
        for n, label in enumerate(versions):
            ch = grpc.insecure_channel(f"unix://{base}/v{n}/netsvc.sock")
            channels.append(ch)
            grpc.channel_ready_future(ch).result(timeout=30)
            stubs[label] = net_pb2_grpc.NetworkServiceStub(ch)
        n = 0
        for i in range(args.runs + 2):  # the first two rounds warm up (the bridge is made on first use)
            for mode, req in modes.items():
                for label, stub in stubs.items():
                    n += 1
                    r = net_pb2.CreateEndpointRequest()
                    r.CopyFrom(req)
                    r.container_id = f"bench{n}"
                    t0 = time.perf_counter()
                    stub.CreateEndpoint(r, timeout=30)
                    t1 = time.perf_counter()
                    stub.DeleteEndpoint(net_pb2.DeleteEndpointRequest(container_id=r.container_id), timeout=30)
                    t2 = time.perf_counter()
                    if i >= 2:
                        create[f"{label}{mode}"].append((t1 - t0) * 1000)
                        delete[f"{label}{mode}"].append((t2 - t1) * 1000)
    finally:
        for ch in channels:
            ch.close()
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    load = os.getloadavg()[0]
    print(f"CreateEndpoint over gRPC, {args.runs} runs each, interleaved; load average {load:.1f} on "
          f"{os.cpu_count()} CPUs")
    print("| mode | create median | min-max | delete median |")
    print("|---|---|---|---|")
    for mode in keys:
        c, d = create[mode], delete[mode]
        print(f"| {mode} | {statistics.median(c):.1f} ms | {min(c):.1f}-{max(c):.1f} | {statistics.median(d):.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
