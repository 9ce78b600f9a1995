"""The time netsvc adds to a container start: CreateEndpoint over gRPC, as the gateway calls it.

    .venv/bin/python bench/netsvc_start.py --runs 60          # as root

Starts ``python -m skiff.netsvc`` on roots, a bridge (``skbench0``) and chains of its
own, and times ``CreateEndpoint`` from a connected client (the RPC the gateway makes
before ``StartTask``) for ``none``, ``bridge`` and ``bridge`` with one ``-p``, interleaved
so that drift on a shared machine hits every mode alike; each endpoint is deleted
(untimed for the start, timed separately) before the next. Prints the median, min and
max per mode. netsvc is stopped afterwards and leaves nothing behind.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--port", type=int, default=18999, help="host port published by the `-p` mode")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="skiff-netbench-"))
    sock = base / "netsvc.sock"
    env = dict(os.environ, SKIFF_BRIDGE="skbench0")
    proc = subprocess.Popen([str(PY), "-m", "skiff.netsvc", "-H", f"unix://{sock}", "--data-root", str(base / "data"),
                             "--exec-root", str(base / "run")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    modes = {
        "none": net_pb2.CreateEndpointRequest(network_mode="none", hostname="bench"),
        "bridge": net_pb2.CreateEndpointRequest(network_mode="bridge", hostname="bench"),
        "bridge -p": net_pb2.CreateEndpointRequest(network_mode="bridge", hostname="bench", port_bindings=[
            types_pb2.PortBinding(host_port=args.port, container_port=80, protocol="tcp")]),
    }
    create: dict[str, list[float]] = {m: [] for m in modes}
    delete: dict[str, list[float]] = {m: [] for m in modes}
    try:
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = net_pb2_grpc.NetworkServiceStub(channel)
            n = 0
            for i in range(args.runs + 2):  # the first two rounds warm up (the bridge is made on first use)
                for mode, req in modes.items():
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
                        create[mode].append((t1 - t0) * 1000)
                        delete[mode].append((t2 - t1) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    load = os.getloadavg()[0]
    print(f"CreateEndpoint over gRPC, {args.runs} runs each, interleaved; load average {load:.1f} on "
          f"{os.cpu_count()} CPUs")
    print("| mode | create median | min-max | delete median |")
    print("|---|---|---|---|")
    for mode in modes:
        c, d = create[mode], delete[mode]
        print(f"| {mode} | {statistics.median(c):.1f} ms | {min(c):.1f}-{max(c):.1f} | {statistics.median(d):.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
