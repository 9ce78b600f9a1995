"""Create N never-started busybox containers fast (as bench.py's Skiff.create_many), for
measuring `ps -a` and `rm` by hand:

    .venv/bin/python bench/create_many.py -H unix:///run/skiff/skiff.sock -n 1000 > /tmp/ids
    /usr/bin/time -f %e .venv/bin/skiff -H unix:///run/skiff/skiff.sock rm $(cat /tmp/ids) > /dev/null

Prints the ids, one a line. ``--rm-runs K`` instead creates and removes K times with one
`skiff rm` of all ids each, and prints the CLI wall time of each removal (seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def create_many(host: str, count: int, image: str = "busybox", threads: int = 4) -> list[str]:
    sys.path.insert(0, str(ROOT / "build" / "gen"))
    from skiff.api.v1 import api_pb2, api_pb2_grpc
    from skiff.common.server import channel
    from skiff.types.v1 import types_pb2

    stub = api_pb2_grpc.ContainerServiceStub(channel(host))

    def create(_: int) -> str:
        config = types_pb2.ContainerConfig(image=image)
        config.cmd.values[:] = ["true"]
        return str(stub.CreateContainer(api_pb2.CreateContainerRequest(
            config=config, host_config=types_pb2.HostConfig(network_mode="none")), timeout=120).id)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(create, range(count)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-H", "--host", default="unix:///run/skiff/skiff.sock")
    ap.add_argument("-n", "--count", type=int, default=1000)
    ap.add_argument("--image", default="busybox")
    ap.add_argument("--rm-runs", type=int, default=0, help="create+rm this many times, print rm wall times")
    ap.add_argument("--skiff", default=str(ROOT / ".venv" / "bin" / "skiff"), help="the CLI to time")
    args = ap.parse_args()
    if not args.rm_runs:
        print("\n".join(create_many(args.host, args.count, args.image)))
        return 0
    times = []
    for _ in range(args.rm_runs):
        ids = create_many(args.host, args.count, args.image)
        t0 = time.perf_counter()
        res = subprocess.run([args.skiff, "-H", args.host, "rm", *ids], capture_output=True, env=os.environ)
        times.append(time.perf_counter() - t0)
        if res.returncode:
            print(res.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
            return 1
        print(f"rm {len(ids)}: {times[-1]:.3f} s", flush=True)
    print(f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
