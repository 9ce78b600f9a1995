"""Logs: json-file rotation, `none`, and `logs --tail/--since/--until/-t/-f` across rotated files."""

from __future__ import annotations

import datetime
import gzip
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import VENV_BIN, Engine

WRITE = "i=0; while [ $i -lt {n} ]; do echo line-$i; i=$((i+1)); done"


def _log_files(engine: Engine, cid: str) -> list[str]:
    return sorted(p.name for p in (engine.data_root / "containers" / cid).iterdir() if "-json.log" in p.name)


def _numbers(out: str) -> list[int]:
    return [int(m) for m in re.findall(r"^line-(\d+)$", out, re.M)]


def test_rotation_keeps_at_most_max_file_files_and_the_newest_lines(engine: Engine, skiff) -> None:
    n = 3000  # ~250 kB of json-file entries: many rotations at 10 kB
    cid = skiff("run", "-d", "--log-opt", "max-size=10k", "--log-opt", "max-file=3", "busybox",
                "sh", "-c", WRITE.format(n=n), check=True).stdout.strip()
    try:
        assert skiff("wait", cid, timeout=60).stdout.strip() == "0"
        files = _log_files(engine, cid)
        assert files == [f"{cid}-json.log", f"{cid}-json.log.1", f"{cid}-json.log.2"], files
        for name in files:  # rotation happens between whole records, at about max-size
            data = (engine.data_root / "containers" / cid / name).read_bytes()
            assert data.endswith(b"}\n") and len(data) < 10_000 + 200
        nums = _numbers(skiff("logs", cid, check=True).stdout)
        assert nums[-1] == n - 1
        assert nums == list(range(nums[0], n)), "lines missing or out of order across rotated files"
        assert nums[0] > 0 and len(nums) > 250  # the oldest were dropped; three files' worth kept
        assert _numbers(skiff("logs", "--tail", "5", cid, check=True).stdout) == list(range(n - 5, n))
    finally:
        skiff("rm", "-f", cid)


def test_compress_gzips_rotated_files_and_logs_reads_them(engine: Engine, skiff) -> None:
    n = 3000
    cid = skiff("run", "-d", "--log-opt", "max-size=10k", "--log-opt", "max-file=3", "--log-opt", "compress=true",
                "busybox", "sh", "-c", WRITE.format(n=n), check=True).stdout.strip()
    try:
        assert skiff("wait", cid, timeout=60).stdout.strip() == "0"
        files = _log_files(engine, cid)  # the monitor waits for its last gzip before it exits
        assert files == [f"{cid}-json.log", f"{cid}-json.log.1.gz", f"{cid}-json.log.2.gz"], files
        for name in files[1:]:
            data = gzip.decompress((engine.data_root / "containers" / cid / name).read_bytes())
            assert data.endswith(b"}\n") and len(data) < 10_000 + 200 and b'"log":"line-' in data
        nums = _numbers(skiff("logs", cid, check=True).stdout)
        assert nums == list(range(nums[0], n)) and nums[0] > 0 and len(nums) > 250, nums[:3]
        assert _numbers(skiff("logs", "--tail", "300", cid, check=True).stdout) == list(range(n - 300, n))
    finally:
        skiff("rm", "-f", cid)


def test_rotation_is_on_by_default_and_options_are_validated(skiff) -> None:
    cid = skiff("create", "busybox", "true", check=True).stdout.strip()
    try:
        cfg = skiff("inspect", "--format", "{{json .HostConfig.LogConfig}}", cid).stdout
        assert "json-file" in cfg, cfg
    finally:
        skiff("rm", cid)
    for opts, message in ((["--log-opt", "max-file=0"], "max-file cannot be less than 1"),
                          (["--log-opt", "max-size=-1"], "invalid size"),
                          (["--log-opt", "max-size=0"], "max-size must be a positive number"),
                          (["--log-opt", "colour=blue"], "unknown log opt 'colour' for json-file log driver"),
                          (["--log-driver", "syslog"], "no log driver named 'syslog'"),
                          (["--log-opt", "mode=fast"], "logger log mode not supported: fast"),
                          (["--log-opt", "max-buffer-size=4m"], "only supported with 'mode=non-blocking'")):
        r = skiff("create", *opts, "busybox", "true")
        assert r.returncode != 0 and message in r.stderr, (opts, r.stderr)


def test_log_driver_none(skiff) -> None:
    r = skiff("run", "--rm", "--log-driver", "none", "busybox", "echo", "still attached")
    assert r.returncode == 0 and r.stdout == "still attached\n", r  # attach does not need a log driver
    cid = skiff("run", "-d", "--log-driver", "none", "busybox", "echo", "hello", check=True).stdout.strip()
    try:
        skiff("wait", cid, check=True)
        r = skiff("logs", cid)
        assert r.returncode != 0 and "configured logging driver does not support reading" in r.stderr, r
        assert skiff("inspect", "-f", "[{{.LogPath}}]", cid).stdout.strip() == "[]"  # no log file, as Docker
    finally:
        skiff("rm", cid)


def _stamp(line: str) -> tuple[str, str]:
    stamp, _, text = line.partition(" ")
    return stamp, text


def test_since_until_and_timestamps(skiff) -> None:
    cid = skiff("run", "-d", "busybox", "sh", "-c", "echo a; sleep 1.2; echo b; sleep 1.2; echo c",
                check=True).stdout.strip()
    try:
        skiff("wait", cid, timeout=30, check=True)
        lines = skiff("logs", "-t", cid, check=True).stdout.splitlines()
        assert [_stamp(x)[1] for x in lines] == ["a", "b", "c"]
        stamps = [_stamp(x)[0] for x in lines]
        for s in stamps:
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$", s), s
        b = stamps[1]
        assert skiff("logs", "--since", b, cid, check=True).stdout.split() == ["b", "c"]
        assert skiff("logs", "--until", b, cid, check=True).stdout.split() == ["a", "b"]
        assert skiff("logs", "--since", stamps[1], "--until", stamps[1], cid, check=True).stdout.split() == ["b"]
        # the same instant as a Unix timestamp, and in another zone
        when = datetime.datetime.strptime(b[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
        unix = f"{int(when.timestamp())}.{b[20:29]}"
        assert skiff("logs", "--since", unix, cid, check=True).stdout.split() == ["b", "c"]
        plus2 = (when + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + f".{b[20:29]}+02:00"
        assert skiff("logs", "--until", plus2, cid, check=True).stdout.split() == ["a", "b"]
        # relative: everything is from the last hour, nothing from before it
        assert skiff("logs", "--since", "1h", cid, check=True).stdout.split() == ["a", "b", "c"]
        assert skiff("logs", "--until", "1h", cid, check=True).stdout == ""
        r = skiff("logs", "--since", "yesterday", cid)
        assert r.returncode != 0 and 'invalid value for "since"' in r.stderr
    finally:
        skiff("rm", cid)


@pytest.mark.parametrize("compress", ["false", "true"])
def test_follow_keeps_following_across_rotations(engine: Engine, skiff, compress: str) -> None:
    n = 1500  # ~120 lines per 10 kB file; written at ~250 lines/s, so a reader may lag ~2 s
    script = f"i=0; while [ $i -lt {n} ]; do echo line-$i; i=$((i+1)); [ $((i % 50)) = 0 ] && sleep 0.2; done"
    cid = skiff("run", "-d", "--log-opt", "max-size=10k", "--log-opt", "max-file=5", "--log-opt",
                f"compress={compress}", "busybox", "sh", "-c", script, check=True).stdout.strip()
    try:
        env = {"SKIFF_HOST": engine.host, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([str(VENV_BIN / "skiff"), "logs", "-f", cid], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        nums = _numbers(out.stdout)
        assert nums == list(range(nums[0], n)), "following lost or repeated lines at a rotation"
        assert len(nums) > 600  # more than the five files hold at the end: it followed through rotations
        assert len(_log_files(engine, cid)) == 5
    finally:
        skiff("rm", "-f", cid)


def test_logs_of_a_restarted_container_appends(engine: Engine, skiff) -> None:
    cid = skiff("run", "-d", "busybox", "echo", "run", check=True).stdout.strip()
    try:
        skiff("wait", cid, check=True)
        skiff("start", cid, check=True)
        skiff("wait", cid, check=True)
        assert skiff("logs", cid, check=True).stdout == "run\nrun\n"
        assert Path(engine.data_root / "containers" / cid / f"{cid}-json.log").exists()
    finally:
        skiff("rm", cid)
