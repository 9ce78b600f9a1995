"""Go's ``time.ParseDuration`` (``1m30s``, ``500ms``, ``0``), as Docker's flags and HEALTHCHECK options take it;
and the RFC 3339 dates of Docker's ``--since``/``--until``/``until=`` values."""

from __future__ import annotations

import datetime
import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Nanoseconds; ValueError (Go's message) for anything else."""
    s = text.strip()
    if s == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f'time: invalid duration "{text}"')
    return int(total)


_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
                   r"(Z|z|[+-]\d{2}:\d{2})?$")


def parse_date_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 date or time (``2013-01-02``, ``2013-01-02T13:23``,
    ``...:37.5Z``, ``+02:00``; local time without a zone), None if ``text`` is not shaped as one;
    ValueError (Docker's message) for an impossible date."""
    m = _DATE.match(text)
    if m is None:
        return None
    year, mon, day, hh, mm, ss, frac, zone = m.groups()
    tz: datetime.tzinfo | None = None
    if zone in ("Z", "z"):
        tz = datetime.UTC
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        dt = datetime.datetime(int(year), int(mon), int(day), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=tz)
    except ValueError as err:
        raise ValueError(f'parsing time "{text}": {err}') from None
    return int(dt.timestamp()) * 10**9 + int((frac or "0").ljust(9, "0"))
