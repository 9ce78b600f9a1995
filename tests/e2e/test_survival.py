"""Containers do not depend on a Python service: kill execsvc, the container runs on."""

from __future__ import annotations

import os
import signal
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from skiff.common.server import channel
from tests.e2e.conftest import Engine


def _serving(sock: str) -> bool:
    try:
        stub = health_pb2_grpc.HealthStub(channel(sock))
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except Exception:
        return False


def test_container_survives_execsvc_sigkill(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", "sleep 4; exit 7").stdout.strip()
    assert len(cid) == 64
    old = engine.service_pid("execsvc")
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    sock = f"unix://{engine.exec_root}/execsvc.sock"
    while not _serving(sock) or engine.service_pid("execsvc") == old:
        assert time.monotonic() - killed < 2.0, "execsvc was not back within 2 seconds"
        time.sleep(0.02)
    ps = skiff("ps", "--no-trunc").stdout
    assert cid in ps and "Up " in ps, ps
    assert skiff("wait", cid, timeout=30).stdout.strip() == "7"
    skiff("rm", cid, check=True)


def test_exit_code_of_a_container_that_ended_while_execsvc_was_down(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", "sleep 1; exit 5").stdout.strip()
    pid = engine.service_pid("execsvc")
    os.kill(pid, signal.SIGSTOP)  # execsvc sees nothing while the container ends
    try:
        time.sleep(2)
        os.kill(pid, signal.SIGKILL)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert skiff("wait", cid, timeout=30).stdout.strip() == "5"
    skiff("rm", cid, check=True)
