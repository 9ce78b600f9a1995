"""format.py: Docker's human output rules (go-units, tabwriter, strconv.Quote)."""

from __future__ import annotations

import pytest

from skiff.cli import format as fmt


@pytest.mark.parametrize(("seconds", "text"), [
    (0.5, "Less than a second"), (1, "1 second"), (5, "5 seconds"), (59.9, "59 seconds"),
    (60, "About a minute"), (119, "About a minute"), (120, "2 minutes"), (59 * 60, "59 minutes"),
    (3600, "About an hour"), (89 * 60, "About an hour"), (90 * 60, "2 hours"), (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"), (13 * 86400, "13 days"), (14 * 86400, "2 weeks"), (59 * 86400, "8 weeks"),
    (60 * 86400, "2 months"), (400 * 86400, "13 months"), (730 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert fmt.human_duration(seconds) == text


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (500, "500B"), (999, "999B"), (1000, "1kB"), (1234, "1.23kB"), (4261550, "4.26MB"),
    (77_800_000, "77.8MB"), (123_456_789, "123MB"), (1_200_000_000, "1.2GB"), (999_999, "1MB"),
])
def test_human_size(size: int, text: str) -> None:
    assert fmt.human_size(size) == text


def test_bytes_size() -> None:
    assert fmt.bytes_size(2087354368) == "1.944GiB"
    assert fmt.bytes_size(512) == "512B"
    assert fmt.bytes_size(6 * 1024 * 1024) == "6MiB"


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("512k", 512 << 10), ("64m", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30),
    ("1.5g", 3 << 29), ("2GiB", 2 << 30), ("10mb", 10 << 20), ("1 g", 1 << 30), ("3t", 3 << 40),
])
def test_parse_ram(text: str, value: int) -> None:
    assert fmt.parse_ram(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1m", "1x", "1.2.3m", "m"])
def test_parse_ram_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        fmt.parse_ram(text)


def test_ellipsis_and_quote() -> None:
    assert fmt.ellipsis("short", 20) == "short"
    assert fmt.ellipsis("x" * 20, 20) == "x" * 20
    assert fmt.ellipsis("x" * 21, 20) == "x" * 19 + "…"
    assert fmt.go_quote('echo "hi"\n') == '"echo \\"hi\\"\\n"'
    assert fmt.go_quote("a…") == '"a…"'
    assert fmt.go_quote("\x01") == '"\\x01"'


def test_table_like_tabwriter() -> None:
    out = fmt.table(["A", "LONGER HEADER", "Z"], [["x", "", "last"], ["yyyyyyyyyyyy", "b", ""]])
    assert out == (
        "A              LONGER HEADER   Z\n"
        "x                              last\n"
        "yyyyyyyyyyyy   b               \n"
    )


def test_ids_and_times() -> None:
    assert fmt.short_id("sha256:" + "ab" * 32) == "abababababab"
    assert fmt.short_id("cd" * 32) == "cdcdcdcdcdcd"
    assert fmt.rfc3339nano(0, 0) == "0001-01-01T00:00:00Z"
    assert fmt.rfc3339nano(1700000000, 0) == "2023-11-14T22:13:20Z"
    assert fmt.rfc3339nano(1700000000, 120000000) == "2023-11-14T22:13:20.12Z"
    assert fmt.rfc3339nano_fixed(1700000000, 120000000) == "2023-11-14T22:13:20.120000000Z"


@pytest.mark.parametrize(("args", "text"), [
    (("running", 0, 95.0, None), "Up 5 seconds"),
    (("paused", 0, 40.0, None), "Up About a minute (Paused)"),
    (("exited", 3, 10.0, 97.0), "Exited (3) 3 seconds ago"),
    (("exited", 0, 10.0, None), "Exited (0)"),
    (("exited", 127, None, None), "Created"),
    (("created", 0, None, None), "Created"),
    (("restarting", 1, 10.0, 98.0), "Restarting (1) 2 seconds ago"),
    (("dead", 0, None, None), "Dead"),
    (("removing", 0, None, None), "Removal In Progress"),
])
def test_container_status(args: tuple[str, int, float | None, float | None], text: str) -> None:
    assert fmt.container_status(*args, now=100.0) == text
    assert fmt.ago(90.0, 100.0) == "10 seconds ago"
