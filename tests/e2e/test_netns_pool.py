"""``--network none`` from netsvc's pool of namespaces made ahead of time, seen from inside.

The container must not be able to tell a pooled namespace from a fresh one: ``lo`` up with
127.0.0.1, no other interface, and every /proc/sys/net setting as in a namespace the test
makes itself. Nothing leaves the containers' own namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import Engine

#: Every readable /proc/sys/net setting of the reader's namespace, one ``path=value`` a line.
DUMP = ('for f in $(find /proc/sys/net -type f); do '
        'printf "%s=%s\\n" "$f" "$(cat "$f" 2>/dev/null | tr "\\n\\t" "  ")"; done')


def settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def pooled_namespaces(pid: int) -> set[int]:
    """Inodes of the network namespaces netsvc holds by a descriptor (its pool)."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            out.add(int(target[5:-1]))
    return out


def test_a_pooled_none_namespace_is_what_a_fresh_one_gives(engine: Engine) -> None:
    netsvc = engine.service_pid("netsvc")
    deadline = time.monotonic() + 30
    while not (pooled := pooled_namespaces(netsvc)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pooled, "netsvc keeps no namespace made ahead of time (the pool is on by default)"
    cid = engine.skiff("run", "-d", "--network", "none", "busybox", "sleep", "120", check=True).stdout.strip()
    try:
        key = json.loads(engine.skiff("inspect", cid, check=True).stdout)[0]["NetworkSettings"]["SandboxKey"]
        assert key == str(engine.exec_root / "netns" / cid)
        ino = os.stat(key).st_ino
        assert ino in pooled  # handed out from the pool
        inside = engine.skiff("exec", cid, "sh", "-c", "readlink /proc/self/ns/net; ip -o link; ip -o -4 addr; "
                              "cat /proc/net/dev", check=True).stdout
        assert f"net:[{ino}]" in inside
        links = [ln for ln in inside.splitlines() if ln[:1].isdigit() and " inet" not in ln]
        assert len(links) == 1 and ": lo:" in links[0] and ",UP" in links[0], inside
        assert "lo    inet 127.0.0.1/8" in inside
        dev = inside.split(" face |", 1)[1].splitlines()[1:]  # /proc/net/dev's interfaces: only lo
        assert [ln.split(":")[0].strip() for ln in dev] == ["lo"], inside
        got = settings(engine.skiff("exec", cid, "sh", "-c", DUMP, check=True).stdout)
        fresh = settings(subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up; " + DUMP],
                                        capture_output=True, text=True, check=True, timeout=60).stdout)
        assert len(got) > 50
        assert {k: v for k, v in got.items() if fresh.get(k) != v} == {}, "settings differ from a fresh namespace"
        assert set(got) == set(fresh)
        # Another container joins it (--network container:), and sees the same namespace.
        joined = engine.skiff("run", "--rm", "--network", f"container:{cid}", "busybox", "sh", "-c",
                              "readlink /proc/self/ns/net; ip -o -4 addr", check=True).stdout
        assert f"net:[{ino}]" in joined and "inet 127.0.0.1/8" in joined
    finally:
        engine.skiff("rm", "-f", cid, check=True)
    assert not Path(key).exists()
