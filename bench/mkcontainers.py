#!/usr/bin/env python3
"""Create N created (never started) busybox containers on an engine, quickly (for measuring `ps -a`/`rm`).

    .venv/bin/python bench/mkcontainers.py -H unix:///tmp/x/run/skiff.sock [-n 1000] [--image busybox]

Calls CreateContainer over one gRPC channel from a few threads (as bench.py's Skiff.create_many).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "gen"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-H", "--host", required=True, help="unix:///path/to/skiff.sock")
    ap.add_argument("-n", type=int, default=1000, help="how many containers (default 1000)")
    ap.add_argument("--image", default="busybox")
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    from skiff.api.v1 import api_pb2, api_pb2_grpc
    from skiff.common.server import channel
    from skiff.types.v1 import types_pb2

    stub = api_pb2_grpc.ContainerServiceStub(channel(args.host))

    def create(_: int) -> str:
        config = types_pb2.ContainerConfig(image=args.image)
        config.cmd.values[:] = ["true"]
        return str(stub.CreateContainer(api_pb2.CreateContainerRequest(
            config=config, host_config=types_pb2.HostConfig(network_mode="none")), timeout=120).id)

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        ids = list(pool.map(create, range(args.n)))
    print(f"created {len(ids)} containers in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
