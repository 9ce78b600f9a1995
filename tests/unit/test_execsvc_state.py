"""Runtime.state is computed from files; a recycled pid must not look like a live container."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skiff.common.errors import NotFound
from skiff.execsvc.cgroups import CgroupV2
from skiff.execsvc.runtime import LOST_EXIT_CODE, Runtime, _starttime


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    r = Runtime(tmp_path / "exec", tmp_path / "no-shim", cgroups=CgroupV2(tmp_path / "cg"))
    b = r.bundle("c")
    b.mkdir(parents=True)
    (b / "config.json").write_text(json.dumps({"skiff": {"logPath": str(b / "c-json.log")}}))
    return r


def _started(rt: Runtime, pid: int, starttime: int) -> None:
    start = {"pid": pid, "pid_starttime": starttime, "shim_pid": pid, "shim_starttime": starttime, "started_at": "T0"}
    (rt.bundle("c") / "start.json").write_text(json.dumps(start))


def test_created_then_running_then_exited(rt: Runtime) -> None:
    assert rt.state("c").status == "created"
    me = os.getpid()
    _started(rt, me, _starttime(me))
    st = rt.state("c")
    assert (st.status, st.pid, st.started_at) == ("running", me, "T0")
    (rt.bundle("c") / "exit.json").write_text(
        json.dumps({"exit_code": 7, "signal": 0, "finished_at": "T1", "oom_killed": False})
    )
    st = rt.state("c")
    assert (st.status, st.exit_code, st.finished_at) == ("exited", 7, "T1")
    assert rt.wait("c", timeout=0) == 7


def test_reused_pid_is_not_running(rt: Runtime) -> None:
    me = os.getpid()
    _started(rt, me, _starttime(me) + 1)  # same pid, another process
    st = rt.state("c")
    assert (st.status, st.exit_code) == ("exited", LOST_EXIT_CODE)


def test_unknown_container(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        rt.state("nope")
    with pytest.raises(NotFound):
        rt.state("../c")
    assert rt.list() == ["c"]
