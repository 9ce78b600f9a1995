"""Events: Docker's filters, the kept ring and since/until, exits reported once, the CLI's output,
and execsvc's exit watcher (real child processes, a runtime faked from their pids)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from skiff.api.v1 import api_pb2
from skiff.apiserver import events
from skiff.cli import events as cli_events
from skiff.cli.containers import parse_timestamp
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.graph.v1 import graph_pb2
from skiff.types.v1 import types_pb2

T = api_pb2.EventType


def _ev(type_: int, action: str, actor: str, **attrs: str) -> api_pb2.Event:
    return api_pb2.Event(type=type_, action=action, scope="local",  # type: ignore[arg-type]
                         actor=api_pb2.EventActor(id=actor, attributes=attrs))


def _f(*pairs: str) -> events.Filters:
    return events.Filters([types_pb2.Filter(key=p.split("=", 1)[0], value=p.split("=", 1)[1]) for p in pairs])


CID = "a" * 64
START = _ev(T.EVENT_TYPE_CONTAINER, "start", CID, name="web", image="busybox:latest", tier="front")
DIE = _ev(T.EVENT_TYPE_CONTAINER, "die", CID, name="web", image="busybox", exitCode="3")
TAG = _ev(T.EVENT_TYPE_IMAGE, "tag", "sha256:" + "b" * 64, name="busybox:mine")
NET = _ev(T.EVENT_TYPE_NETWORK, "create", "c" * 64, name="front", type="bridge")
VOL = _ev(T.EVENT_TYPE_VOLUME, "create", "data", driver="local")


# --- filters -------------------------------------------------------------------------------


def test_no_filter_matches_everything() -> None:
    f = _f()
    assert all(f.match(e) for e in (START, DIE, TAG, NET, VOL))


def test_same_key_is_or_different_keys_are_and() -> None:
    assert _f("event=start", "event=die").match(START) and _f("event=start", "event=die").match(DIE)
    assert not _f("event=start", "event=die").match(TAG)
    assert _f("type=container", "event=die").match(DIE)
    assert not _f("type=container", "event=die").match(START)
    assert not _f("type=image", "event=die").match(DIE)


def test_type_filter() -> None:
    assert [e.action for e in (START, TAG, NET, VOL) if _f("type=network", "type=volume").match(e)] == [
        "create", "create"]
    assert _f("type=image").match(TAG) and not _f("type=image").match(START)


def test_container_filter_takes_a_name_or_an_id_prefix() -> None:
    assert _f("container=web").match(START)
    assert _f(f"container={CID[:12]}").match(START)
    assert not _f("container=db").match(START)
    assert _f("container=db", "container=web").match(START)
    assert not _f("container=web").match(NET)  # as Docker: the container key applies to every event


def test_image_filter_matches_with_or_without_the_tag() -> None:
    assert _f("image=busybox").match(START)  # image=busybox:latest, tag stripped
    assert _f("image=busybox:latest").match(START)
    assert _f("image=busybox").match(TAG)  # an image event's name
    assert not _f("image=alpine").match(START)


def test_label_filters_must_all_match() -> None:
    assert _f("label=tier").match(START)
    assert _f("label=tier=front").match(START)
    assert not _f("label=tier=back").match(START)
    assert not _f("label=tier=front", "label=other").match(START)  # as Docker's MatchKVList: all of them


def test_network_and_volume_filters() -> None:
    assert _f("network=front").match(NET) and not _f("network=back").match(NET)
    assert _f("volume=data").match(VOL) and not _f("volume=data").match(NET)


def test_exec_actions_match_their_bare_names() -> None:
    ex = _ev(T.EVENT_TYPE_CONTAINER, "exec_start: sh -c true", CID, name="web", execID="e1")
    assert _f("event=exec_start").match(ex)
    assert not _f("event=exec_create").match(ex)
    assert _f("event=exec_start: sh -c true").match(ex)


@pytest.mark.parametrize("bad", [("bogus=1",), ("type=cheese",)])
def test_bad_filters_are_invalid_argument(bad: tuple[str, ...]) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        _f(*bad)
    assert err.value.reason == errors.UNSUPPORTED_FILTER


# --- the hub: ring, since/until, live -------------------------------------------------------


def _req(since_ns: int = 0, until_ns: int = 0, *filters: str) -> api_pb2.EventsRequest:
    req = api_pb2.EventsRequest(filters=[types_pb2.Filter(key=f.split("=", 1)[0], value=f.split("=", 1)[1])
                                         for f in filters])
    if since_ns:
        req.since.seconds, req.since.nanos = divmod(since_ns, 10**9)
    if until_ns:
        req.until.seconds, req.until.nanos = divmod(until_ns, 10**9)
    return req


def _publish(hub: events.Hub, n: int, at: int) -> None:
    for i in range(n):
        hub.publish(T.EVENT_TYPE_VOLUME, "create", f"v{i}", {"driver": "local"}, at_ns=at + i)


def test_the_ring_keeps_the_last_256() -> None:
    hub = events.Hub()
    base = time.time_ns() - 10**9
    _publish(hub, 300, base)
    got = list(hub.stream(_req(since_ns=1, until_ns=time.time_ns()), lambda: False))
    assert len(got) == events.KEPT == 256
    assert got[0].actor.id == "v44" and got[-1].actor.id == "v299"


def test_since_and_until_select_kept_events() -> None:
    hub = events.Hub()
    base = time.time_ns() - 10**9
    _publish(hub, 10, base)
    got = [e.actor.id for e in hub.stream(_req(base + 3, base + 6), lambda: False)]
    assert got == ["v3", "v4", "v5", "v6"]
    got = [e.actor.id for e in hub.stream(_req(base + 8, time.time_ns(), "volume=v9"), lambda: False)]
    assert got == ["v9"]


def test_until_before_since_is_invalid() -> None:
    hub = events.Hub()
    with pytest.raises(errors.InvalidArgument):
        list(hub.stream(_req(2000, 1000), lambda: False))


def test_until_alone_gives_kept_events_too_then_ends_the_stream() -> None:
    """As Docker (loadBufferedEvents): with `until` set, the kept events up to it come first."""
    hub = events.Hub()
    _publish(hub, 3, time.time_ns() - 10**9)
    until = time.time_ns() + 3 * 10**9
    subscribed = threading.Event()
    got: list[str] = []

    def read() -> None:
        for e in hub.stream(_req(0, until), lambda: False, subscribed.set):
            got.append(e.actor.id)

    reader = threading.Thread(target=read)
    reader.start()
    assert subscribed.wait(10)
    hub.publish(T.EVENT_TYPE_VOLUME, "create", "live", {})
    reader.join(30)  # ends by itself at `until`
    assert not reader.is_alive()
    assert got == ["v0", "v1", "v2", "live"]


def test_without_since_or_until_only_live_events_until_cancelled() -> None:
    hub = events.Hub()
    _publish(hub, 3, time.time_ns() - 10**9)
    done, subscribed = threading.Event(), threading.Event()
    out: list[str] = []

    def read() -> None:
        for e in hub.stream(_req(), done.is_set, subscribed.set):
            out.append(e.actor.id)
            done.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert subscribed.wait(10)
    hub.publish(T.EVENT_TYPE_VOLUME, "create", "live", {})
    reader.join(30)
    assert not reader.is_alive() and out == ["live"]


def test_event_times_increase_with_nanoseconds() -> None:
    hub = events.Hub()
    a = hub.publish(T.EVENT_TYPE_VOLUME, "create", "x", {})
    b = hub.publish(T.EVENT_TYPE_VOLUME, "destroy", "x", {})
    assert (b.time.seconds, b.time.nanos) > (a.time.seconds, a.time.nanos)


# --- containers: attributes, exits once, oom ------------------------------------------------


def _record(name: str = "web") -> graph_pb2.Container:
    rec = graph_pb2.Container(id=CID, name=name, image_id="sha256:" + "1" * 64)
    rec.config.image = "busybox"
    rec.config.labels["tier"] = "front"
    rec.mounts.add(type="volume", name="data", destination="/data", driver="local")
    return rec


def _kept(hub: events.Hub) -> list[api_pb2.Event]:
    return list(hub.stream(_req(1, time.time_ns()), lambda: False))


def test_container_attributes_are_remembered_for_later_events() -> None:
    hub = events.Hub()
    hub.container(_record(), "create")
    hub.container(CID, "destroy")  # the record is gone by then
    create, destroy = _kept(hub)
    for ev in (create, destroy):
        assert dict(ev.actor.attributes) == {"name": "web", "image": "busybox", "tier": "front"}


def test_an_exit_is_reported_once_with_oom_first_and_volumes() -> None:
    hub = events.Hub()
    hub.container(_record(), "start")
    hub.exited(CID, 137, True, 5_000)
    hub.exited(CID, 137, True, 5_000)  # the stop saw it too
    kinds = [(TYPE, e.action) for e in _kept(hub) for TYPE in [events.TYPE_NAMES[e.type]]]
    assert kinds == [("volume", "mount"), ("container", "start"), ("container", "oom"), ("container", "die"),
                     ("volume", "unmount")]
    die = _kept(hub)[3]
    assert die.actor.attributes["exitCode"] == "137"
    hub.exited(CID, 0, False, 9_000)  # the next run
    assert [e.action for e in _kept(hub)][-2:] == ["die", "unmount"]


class _FakeNet:
    def __init__(self) -> None:
        self.asked = 0

    def network_call(self, method: str, request: Any) -> Any:
        assert method == "InspectNetwork"
        self.asked += 1
        resp = api_pb2.InspectNetworkResponse()
        resp.network.id, resp.network.name, resp.network.driver = "n" * 64, request.ref, "bridge"
        return resp


def test_network_connect_at_start_and_disconnect_after_die() -> None:
    hub = events.Hub()
    net = _FakeNet()
    hub.bind(None, None, net)
    rec = _record()
    del rec.mounts[:]
    rec.host_config.network_mode = "front"
    hub.container(rec, "start")
    hub.exited(CID, 0, False, 10)
    hub.container(rec, "start")
    got = [(events.TYPE_NAMES[e.type], e.action, e.actor.attributes.get("name")) for e in _kept(hub)]
    assert got[:4] == [("network", "connect", "front"), ("container", "start", "web"), ("container", "die", "web"),
                       ("network", "disconnect", "front")]
    assert all(e.actor.attributes["container"] == CID for e in _kept(hub) if e.type == T.EVENT_TYPE_NETWORK)
    assert net.asked == 1  # the network's id is asked once
    rec.host_config.network_mode = "container:" + "f" * 64
    hub.container(rec, "start")
    assert _kept(hub)[-1].action == "start" and _kept(hub)[-2].action == "start"


def test_an_exit_seen_before_its_start_is_reported_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = events.Hub()
    rec = _record()
    del rec.mounts[:]
    hub.container(rec, "create")
    began = time.time_ns()
    hub.exited(CID, 0, False, began + 2, began + 1)  # the stream was faster than the start call
    assert [e.action for e in _kept(hub)] == ["create"]
    hub.container(rec, "start")
    assert [e.action for e in _kept(hub)] == ["create", "start", "die"]
    # a start that is never reported (it failed in the gateway): the exit goes out after a while
    monkeypatch.setattr(events, "_PARKED_FOR", 0.05)
    began = time.time_ns()
    hub.exited(CID, 1, False, began + 2, began + 1)
    deadline = time.monotonic() + 30
    while len(_kept(hub)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.action for e in _kept(hub)] == ["create", "start", "die", "die"]


def test_exited_task_ignores_running_tasks() -> None:
    hub = events.Hub()
    task = exec_pb2.Task(id=CID)
    task.state.status = types_pb2.CONTAINER_STATUS_RUNNING
    hub.exited_task(task)
    task.state.status = types_pb2.CONTAINER_STATUS_EXITED
    task.state.exit_code = 3
    task.state.finished_at.seconds = 100
    hub.exited_task(task)
    hub.exited_task(task)
    assert [(e.action, e.actor.attributes["exitCode"]) for e in _kept(hub)] == [("die", "3")]


class _FakeExec:
    def __init__(self, tasks: dict[str, exec_pb2.Task], stream: list[exec_pb2.WatchTasksResponse]):
        self.tasks, self.stream = tasks, stream

    def get_tasks(self, ids: list[str]) -> dict[str, exec_pb2.Task]:
        return {i: self.tasks[i] for i in ids if i in self.tasks}

    def watch_tasks(self) -> Any:
        msgs = self.stream

        class Stream:
            def __iter__(self) -> Any:
                return iter(msgs)

            def cancel(self) -> None:
                pass

        return Stream()


def test_a_resubscription_reports_exits_missed_while_execsvc_was_down() -> None:
    hub = events.Hub()
    other = "d" * 64
    hub.container(_record(), "start")
    hub.container(other, "start")
    gone = exec_pb2.Task(id=CID)
    gone.state.status = types_pb2.CONTAINER_STATUS_EXITED
    gone.state.exit_code = 7
    gone.state.finished_at.seconds = 50
    live_exit = exec_pb2.TaskExit(id=other, exit_code=2)
    live_exit.finished_at.seconds = 60
    hub.bind(None, _FakeExec({CID: gone}, [exec_pb2.WatchTasksResponse(snapshot=True, running=[other]),
                                           exec_pb2.WatchTasksResponse(exit=live_exit)]))
    hub._watch_once()
    dies = [(e.actor.id, e.actor.attributes["exitCode"]) for e in _kept(hub) if e.action == "die"]
    assert dies == [(CID, "7"), (other, "2")]


def test_hooks_never_raise() -> None:
    saved = events.HUB
    try:
        events.HUB = None  # type: ignore[assignment]
        events.container(CID, "start")  # logged, not raised
    finally:
        events.HUB = saved


def test_image_helpers() -> None:
    assert events.familiar("docker.io/library/busybox") == "busybox:latest"
    assert events.familiar("localhost:5000/x") == "localhost:5000/x:latest"
    assert events.familiar("busybox:1.36") == "busybox:1.36"
    assert events._strip_tag("localhost:5000/x:1") == "localhost:5000/x"
    assert events._strip_tag("localhost:5000/x") == "localhost:5000/x"


# --- the CLI --------------------------------------------------------------------------------


def test_default_line_is_dockers() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    line = cli_events.line("container", "start", "abc", {"name": "x", "image": "busybox"}, 1704164645, 123456789)
    assert line == "2024-01-02T03:04:05.123456789Z container start abc (image=busybox, name=x)"
    assert cli_events.line("network", "create", "n1", {}, 1704164645, 5) == \
        "2024-01-02T03:04:05.000000005Z network create n1"


def test_local_time_zone_offset() -> None:
    try:
        os.environ["TZ"] = "Europe/Paris"
        time.tzset()
        assert cli_events.format_time(1704164645, 0) == "2024-01-02T04:04:05.000000000+01:00"
    finally:
        os.environ["TZ"] = "UTC"
        time.tzset()


def test_json_and_template_formats() -> None:
    doc = cli_events.message("container", "die", "abc", {"exitCode": "3", "image": "busybox"}, "local",
                             1704164645, 7)
    parsed = json.loads(cli_events.render("json", doc))
    assert parsed["Type"] == "container" and parsed["Action"] == "die" and parsed["status"] == "die"
    assert parsed["Actor"] == {"ID": "abc", "Attributes": {"exitCode": "3", "image": "busybox"}}
    assert parsed["timeNano"] == 1704164645 * 10**9 + 7 and parsed["from"] == "busybox"
    assert cli_events.render("{{.Action}} {{.Actor.Attributes.exitCode}}", doc) == "die 3"


def test_filter_flags() -> None:
    assert cli_events.parse_filters(["type=container", "label=a=b"]) == [("type", "container"), ("label", "a=b")]
    with pytest.raises(Exception, match="bad format of filter"):
        cli_events.parse_filters(["nonsense"])


def test_since_until_values() -> None:
    now = 1_700_000_000 * 10**9
    assert parse_timestamp("10m", now) == (1_700_000_000 - 600, 0)
    assert parse_timestamp("1700000000.5", now) == (1_700_000_000, 500_000_000)
    assert parse_timestamp("2024-01-02T03:04:05.123456789Z", now) == (1704164645, 123456789)
    with pytest.raises(ValueError):
        parse_timestamp("yesterday", now)


def test_system_events_is_events() -> None:
    from skiff.cli import prune

    assert prune.management_argv(["system", "events", "--since", "1m"]) == ["events", "--since", "1m"]


# --- execsvc's exit watcher -----------------------------------------------------------------


class _Runtime:
    """The few Runtime methods the watcher uses, over real child processes."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def bundle(self, cid: str) -> Path:
        return self.root / cid

    def list(self) -> list[str]:
        return sorted(self.procs)

    def run(self, cid: str, code: int, seconds: float = 0.0) -> None:
        proc = subprocess.Popen([sys.executable, "-c", f"import time,sys; time.sleep({seconds}); sys.exit({code})"])
        self.procs[cid] = proc
        stat = Path(f"/proc/{proc.pid}/stat").read_bytes()
        start = int(stat[stat.rindex(b")") + 2:].split()[19])
        (self.root / cid).mkdir(parents=True, exist_ok=True)
        (self.root / cid / "start.json").write_text(json.dumps({"shim_pid": proc.pid, "shim_starttime": start}))

    def state(self, cid: str) -> Any:
        from skiff.execsvc.runtime import State

        proc = self.procs[cid]
        code = proc.poll()
        if code is None:
            return State("running", pid=proc.pid)
        return State("exited", exit_code=code, finished_at=f"2026-01-01T00:00:0{len(cid) % 10}Z",
                     started_at="2026-01-01T00:00:00Z")


def test_exit_watcher_reports_each_exit_once_from_one_thread(tmp_path: Path) -> None:
    from skiff.execsvc.exits import ExitWatcher

    rt = _Runtime(tmp_path)
    rt.run("before", 4, seconds=30)  # running when the watcher starts
    watcher = ExitWatcher(rt)  # type: ignore[arg-type]
    watcher.start()
    try:
        running, q = watcher.subscribe()
        assert running == ["before"]
        before = set(threading.enumerate())
        for i in range(5):
            rt.run(f"c{i}", i)
            watcher.add(f"c{i}")
        assert not set(threading.enumerate()) - before  # no thread per task
        rt.procs["before"].kill()
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < 6 and time.monotonic() < deadline:
            try:
                e = q.get(timeout=1)
            except queue.Empty:
                continue
            assert e.id not in got, f"{e.id} reported twice"
            got[e.id] = e.exit_code
        for proc in rt.procs.values():
            proc.wait()  # reaped by us, the parent; the watcher only read their pidfds
        assert got == {"c0": 0, "c1": 1, "c2": 2, "c3": 3, "c4": 4, "before": -9}
        watcher.reap("c1")  # a deletion after the exit was reported: nothing again
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
    finally:
        watcher.close()
        for proc in rt.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
