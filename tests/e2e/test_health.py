"""Health checks with real probes: a file inside the container decides healthy or unhealthy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

FAST = ["--health-interval", "300ms", "--health-retries", "2"]


def _until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what}: not met within {timeout}s"
        time.sleep(0.1)


def _health(skiff, cid: str) -> dict:
    out = skiff("inspect", "-f", "{{json .State.Health}}", cid).stdout.strip()
    return json.loads(out) if out and out != "null" else {}


def test_a_file_decides_healthy_or_unhealthy(skiff) -> None:
    cid = skiff("run", "-d", "--health-cmd", "test -e /ok && echo fine", *FAST, "busybox", "sleep", "300",
                check=True).stdout.strip()
    try:
        assert _health(skiff, cid)["Status"] in ("starting", "unhealthy")
        _until(lambda: _health(skiff, cid).get("Status") == "unhealthy", what="unhealthy")
        assert _health(skiff, cid)["FailingStreak"] >= 2
        assert "(unhealthy)" in skiff("ps", check=True).stdout
        skiff("exec", cid, "touch", "/ok", check=True)
        _until(lambda: _health(skiff, cid).get("Status") == "healthy", what="healthy")
        h = _health(skiff, cid)
        assert h["FailingStreak"] == 0 and h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "fine\n"
        assert "(healthy)" in skiff("ps", check=True).stdout
        _until(lambda: len(_health(skiff, cid)["Log"]) == 5 and _health(skiff, cid)["Log"][0]["ExitCode"] == 0,
               what="five results kept")
        for r in _health(skiff, cid)["Log"]:
            assert r["Start"] <= r["End"]
        skiff("exec", cid, "rm", "/ok", check=True)
        _until(lambda: _health(skiff, cid).get("Status") == "unhealthy", what="unhealthy again")
        cfg = json.loads(skiff("inspect", "-f", "{{json .Config.Healthcheck}}", cid).stdout)
        assert cfg["Test"] == ["CMD-SHELL", "test -e /ok && echo fine"] and cfg["Interval"] == 300_000_000
    finally:
        skiff("rm", "-f", cid, check=True)


def test_a_probe_over_its_timeout_fails(skiff) -> None:
    cid = skiff("run", "-d", "--health-cmd", "sleep 30", "--health-timeout", "500ms", *FAST, "busybox",
                "sleep", "300", check=True).stdout.strip()
    try:
        _until(lambda: _health(skiff, cid).get("Status") == "unhealthy", what="unhealthy")
        last = _health(skiff, cid)["Log"][-1]
        assert last["ExitCode"] == -1 and "exceeded timeout" in last["Output"]
        # The killed probes do not pile up in the container.
        _until(lambda: skiff("exec", cid, "sh", "-c", "ps -o comm | grep -c '^sleep' || true").stdout.strip() in
               ("1", "2"), what="probes killed")
    finally:
        skiff("rm", "-f", cid, check=True)


def test_failures_in_the_start_period_do_not_count(skiff) -> None:
    cid = skiff("run", "-d", "--health-cmd", "false", "--health-start-period", "1h", *FAST, "busybox",
                "sleep", "300", check=True).stdout.strip()
    try:
        _until(lambda: len(_health(skiff, cid).get("Log", [])) >= 3, what="three probes")
        h = _health(skiff, cid)
        assert h["Status"] == "starting" and h["FailingStreak"] == 0
        assert "(health: starting)" in skiff("ps", check=True).stdout
    finally:
        skiff("rm", "-f", cid, check=True)


def test_image_healthcheck_and_no_healthcheck(skiff, busybox_tar: Path) -> None:
    skiff("import", "--change", "HEALTHCHECK --interval=300ms --retries=1 CMD test -e /ok", str(busybox_tar),
          "hc:latest", check=True)
    with_check = skiff("run", "-d", "hc", "sleep", "300", check=True).stdout.strip()
    without = skiff("run", "-d", "--no-healthcheck", "hc", "sleep", "300", check=True).stdout.strip()
    try:
        _until(lambda: _health(skiff, with_check).get("Status") == "unhealthy", what="image check runs")
        skiff("exec", with_check, "touch", "/ok", check=True)
        _until(lambda: _health(skiff, with_check).get("Status") == "healthy", what="healthy")
        assert _health(skiff, without) == {}
        assert "(healthy)" not in skiff("ps", "--filter", f"id={without}").stdout
        skiff("stop", "-t", "0", with_check, check=True)
        assert _health(skiff, with_check)["Status"] == "unhealthy"  # as Docker: a stopped container
        r = skiff("run", "--no-healthcheck", "--health-cmd", "true", "hc", "true")
        assert r.returncode == 125 and "conflicts" in r.stderr
    finally:
        skiff("rm", "-f", with_check, without, check=True)
        skiff("rmi", "hc")


def test_health_survives_an_execsvc_restart(engine, skiff) -> None:
    import os
    import signal

    cid = skiff("run", "-d", "--health-cmd", "test -e /ok", *FAST, "busybox", "sleep", "300",
                check=True).stdout.strip()
    try:
        skiff("exec", cid, "touch", "/ok", check=True)
        _until(lambda: _health(skiff, cid).get("Status") == "healthy", what="healthy")
        os.kill(engine.service_pid("execsvc"), signal.SIGKILL)
        _until(lambda: _health(skiff, cid).get("Status") == "healthy", what="healthy after the restart")
        skiff("exec", cid, "rm", "/ok", check=True)
        _until(lambda: _health(skiff, cid).get("Status") == "unhealthy", what="probes run again")
    finally:
        skiff("rm", "-f", cid, check=True)


def test_a_restarted_container_is_checked_again(skiff) -> None:
    # The first run fails without /ok; the policy starts a second, which is healthy.
    script = "if [ -e /second ]; then touch /ok; exec sleep 300; fi; touch /second; sleep 1; exit 1"
    cid = skiff("run", "-d", "--restart", "on-failure:1", "--health-cmd", "test -e /ok", *FAST, "busybox",
                "sh", "-c", script, check=True).stdout.strip()
    try:
        _until(lambda: skiff("inspect", "-f", "{{.RestartCount}}", cid).stdout.strip() == "1", what="restarted")
        _until(lambda: _health(skiff, cid).get("Status") == "healthy", what="healthy after the restart")
    finally:
        skiff("rm", "-f", cid, check=True)


def test_ps_filter_health(skiff) -> None:
    good = skiff("run", "-d", "--health-cmd", "true", *FAST, "busybox", "sleep", "300", check=True).stdout.strip()
    bad = skiff("run", "-d", "--health-cmd", "false", *FAST, "busybox", "sleep", "300", check=True).stdout.strip()
    plain = skiff("run", "-d", "busybox", "sleep", "300", check=True).stdout.strip()
    try:
        _until(lambda: _health(skiff, good).get("Status") == "healthy"
               and _health(skiff, bad).get("Status") == "unhealthy", what="both checked")

        def ids(word: str) -> set[str]:
            return set(skiff("ps", "-q", "--no-trunc", "--filter", f"health={word}", check=True).stdout.split())

        assert ids("healthy") & {good, bad, plain} == {good}
        assert ids("unhealthy") & {good, bad, plain} == {bad}
        assert ids("none") & {good, bad, plain} == {plain}
        r = skiff("ps", "--filter", "health=fine")
        assert r.returncode != 0 and "health=fine" in r.stderr, r.stderr
    finally:
        skiff("rm", "-f", good, bad, plain, check=True)
