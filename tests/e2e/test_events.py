"""`skiff events` against a real engine: what containers, images, networks and volumes do, read back
with --since/--until (kept events) and live, with Docker's filters and output."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

from tests.e2e.conftest import VENV_BIN, Engine

LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9})(Z|[+-]\d{2}:\d{2}) (\w+) (\S+) (\S+)(?: \((.*)\))?$")


def _now() -> str:
    return f"{time.time():.6f}"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what}: not met within {timeout}s"
        time.sleep(0.1)


def _events(skiff, since: str, *filters: str, fmt: str = "") -> list[str]:
    args = ["events", "--since", since, "--until", _now()]
    for f in filters:
        args += ["--filter", f]
    if fmt:
        args += ["--format", fmt]
    result = skiff(*args, check=True, timeout=60)  # --until in the past: the kept events, then the end
    return result.stdout.splitlines()


def _parsed(lines: list[str]) -> list[tuple[str, str, str, dict[str, str]]]:
    out = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"not Docker's event line: {line!r}"
        attrs = dict(pair.split("=", 1) for pair in m.group(6).split(", ")) if m.group(6) else {}
        out.append((m.group(3), m.group(4), m.group(5), attrs))
    return out


def test_container_that_exits_on_its_own_create_start_die_destroy(skiff) -> None:
    name = _name("ev")
    since = _now()
    cid = skiff("create", "--name", name, "-l", "evtest=yes", "busybox", "sh", "-c", "sleep 1; exit 3",
                check=True).stdout.strip()
    skiff("start", name, check=True)
    # nobody waits on it: the exit is seen by execsvc's watcher, not by a wait
    _until(lambda: skiff("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "exited", what="exit")
    _until(lambda: any(" die " in line for line in _events(skiff, since, f"container={name}")), what="die event")
    skiff("rm", name, check=True)
    events = _parsed(_events(skiff, since, f"container={name}"))
    assert [(t, a) for t, a, _, _ in events] == [
        ("container", "create"), ("container", "start"), ("container", "die"), ("container", "destroy")]
    for _, _, actor, attrs in events:
        assert actor == cid
        assert attrs["name"] == name and attrs["image"] == "busybox" and attrs["evtest"] == "yes"
    assert events[2][3]["exitCode"] == "3"


def test_stop_reports_kill_then_die_then_stop(skiff) -> None:
    name = _name("evstop")
    since = _now()
    skiff("run", "-d", "--name", name, "busybox", "sleep", "300", check=True)  # PID 1 ignores SIGTERM
    try:
        skiff("stop", "-t", "1", name, check=True)
        got = [(a, attrs.get("signal", attrs.get("exitCode", "")))
               for _, a, _, attrs in _parsed(_events(skiff, since, f"container={name}"))]
        assert got == [("create", ""), ("start", ""), ("kill", "15"), ("kill", "9"), ("die", "137"), ("stop", "")]
    finally:
        skiff("rm", "-f", name)


def test_rename_and_kill_events(skiff) -> None:
    name, new = _name("evren"), _name("evren2")
    since = _now()
    skiff("run", "-d", "--name", name, "busybox", "sleep", "300", check=True)
    try:
        skiff("rename", name, new, check=True)
        skiff("kill", "-s", "KILL", new, check=True)
        _until(lambda: any(" die " in line for line in _events(skiff, since, f"container={new}")), what="die")
        got = [(a, attrs) for _, a, _, attrs in _parsed(_events(skiff, since, f"container={new}"))]
        rename = [attrs for a, attrs in got if a == "rename"]
        assert rename and rename[0]["oldName"] == "/" + name and rename[0]["name"] == new
        assert [attrs["signal"] for a, attrs in got if a == "kill"] == ["9"]
    finally:
        skiff("rm", "-f", new)


def test_filters_by_type_event_container_and_label(skiff) -> None:
    a, b = _name("eva"), _name("evb")
    since = _now()
    skiff("run", "--name", a, "-l", "evgroup=one", "busybox", "true", check=True)
    skiff("run", "--name", b, "-l", "evgroup=two", "busybox", "true", check=True)
    try:
        def actions(*filters: str) -> list[tuple[str, str]]:
            return [(attrs["name"], act) for _, act, _, attrs in _parsed(_events(skiff, since, *filters))
                    if attrs.get("name") in (a, b)]

        # same key: either; different keys: both
        assert actions("event=create") == [(a, "create"), (b, "create")]
        assert actions("container=" + a, "event=start") == [(a, "start")]
        assert actions("container=" + a, "container=" + b, "event=die") == [(a, "die"), (b, "die")]
        assert actions("label=evgroup=two", "event=start") == [(b, "start")]
        assert actions("type=image", "container=" + a) == []
        assert {act for _, act in actions("type=container", "container=" + a)} >= {"create", "attach", "start", "die"}
    finally:
        skiff("rm", "-f", a, b)


def test_image_tag_untag_and_network_create_destroy(skiff) -> None:
    tag, net = f"evimg-{uuid.uuid4().hex[:6]}:one", _name("evnet")
    since = _now()
    skiff("tag", "busybox", tag, check=True)
    skiff("rmi", tag, check=True)
    net_id = skiff("network", "create", net, check=True).stdout.strip()
    cid = skiff("create", "--network", net, "busybox", "true", check=True).stdout.strip()
    skiff("start", "-a", cid, check=True)
    skiff("rm", cid, check=True)
    skiff("network", "rm", net, check=True)
    image_id = skiff("inspect", "-f", "{{.Id}}", "busybox", check=True).stdout.strip()
    images = [(a, actor, attrs["name"]) for _, a, actor, attrs in _parsed(_events(skiff, since, "type=image"))]
    assert ("tag", image_id, tag) in images
    assert ("untag", image_id, image_id) in images
    assert images.index(("tag", image_id, tag)) < images.index(("untag", image_id, image_id))
    net_events = _parsed(_events(skiff, since, "type=network", f"network={net}"))
    nets = [(a, actor, attrs) for _, a, actor, attrs in net_events]
    assert [(a, actor) for a, actor, _ in nets] == [("create", net_id), ("connect", net_id), ("disconnect", net_id),
                                                    ("destroy", net_id)]
    assert all(attrs["name"] == net and attrs["type"] == "bridge" for _, _, attrs in nets)
    assert nets[1][2]["container"] == cid and nets[2][2]["container"] == cid


def test_json_format_and_template(skiff) -> None:
    name = _name("evjson")
    since = _now()
    skiff("run", "--name", name, "busybox", "sh", "-c", "exit 4", check=False)
    try:
        _until(lambda: any(" die " in line for line in _events(skiff, since, f"container={name}")), what="die")
        docs = [json.loads(line) for line in _events(skiff, since, f"container={name}", "event=die", fmt="json")]
        assert len(docs) == 1
        doc = docs[0]
        assert doc["Type"] == "container" and doc["Action"] == "die" and doc["Actor"]["Attributes"]["exitCode"] == "4"
        assert doc["timeNano"] // 10**9 == doc["time"] and doc["scope"] == "local"
        assert _events(skiff, since, f"container={name}", "event=die",
                       fmt="{{.Actor.Attributes.name}} {{.Action}}") == [f"{name} die"]
    finally:
        skiff("rm", "-f", name)


def test_bad_filter_is_refused(skiff) -> None:
    result = skiff("events", "--since", "1s", "--until", _now(), "--filter", "colour=blue")
    assert result.returncode != 0 and "invalid filter 'colour'" in result.stderr
    result = skiff("system", "events", "--since", "1s", "--until", _now(), "--filter", "type=cheese")
    assert result.returncode != 0 and "cheese" in result.stderr


def test_live_events_see_a_start_and_ctrl_c_ends_cleanly(engine: Engine, skiff) -> None:
    name = _name("evlive")
    skiff("create", "--name", name, "busybox", "true", check=True)
    proc = subprocess.Popen([str(VENV_BIN / "skiff"), "events", "--filter", f"container={name}", "--filter",
                             "event=start", "--format", "{{.Action}} {{.Actor.Attributes.name}}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, SKIFF_HOST=engine.host))
    try:
        seen = b""
        # The subscription may come after the first starts: start again until one is seen (bounded).
        for _ in range(60):
            skiff("start", name, check=True)
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                seen = os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
                break
        assert seen.decode().splitlines()[0] == f"start {name}"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        skiff("rm", "-f", name)


def test_die_is_reported_across_an_execsvc_restart(engine: Engine, skiff) -> None:
    """One exit while execsvc is down (found from the new stream's list of running tasks), one after."""
    early, late = _name("evearly"), _name("evlate")
    since = _now()
    early_id = skiff("run", "-d", "--name", early, "busybox", "sh", "-c", "sleep 1; exit 5", check=True).stdout.strip()
    skiff("run", "-d", "--name", late, "busybox", "sh", "-c", "sleep 6; exit 6", check=True)
    pid = engine.service_pid("execsvc")
    os.kill(pid, signal.SIGSTOP)  # execsvc sees nothing while `early` ends
    try:
        exit_file = engine.exec_root / "containers" / early_id / "exit.json"
        _until(exit_file.exists, what="the early container's exit")
        os.kill(pid, signal.SIGKILL)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    try:
        assert skiff("wait", late, timeout=60).stdout.strip() == "6"
        for name, code in ((early, "5"), (late, "6")):
            _until(lambda name=name: any(" die " in line for line in _events(skiff, since, f"container={name}")),
                   what=f"die of {name}")
            dies = [attrs["exitCode"] for _, a, _, attrs in _parsed(_events(skiff, since, f"container={name}"))
                    if a == "die"]
            assert dies == [code]
    finally:
        skiff("rm", "-f", early, late)
