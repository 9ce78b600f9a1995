"""Human-readable output the way Docker's CLI prints it.

Docker's output is what users and their scripts already read, so the rules here
copy Go's ``docker/go-units`` (durations, sizes, ``-m`` parsing), ``text/tabwriter``
(tables) and ``strconv.Quote``. Plain values in, strings out: no protobuf, no
grpc, so this module is cheap to import and easy to test.
"""

from __future__ import annotations

# re, datetime and collections are imported where they are used: `ps` in the lean client
# (cli/lean) loads this module on its own and needs none of them (~3 ms of start-up).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as dt
    import re
    from collections.abc import Sequence

_DECIMAL_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
_BINARY_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
_RAM_RE: re.Pattern[str] | None = None
_RAM_MULT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``: ``5 seconds``, ``About a minute``, ``2 hours``."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _scaled(size: float, base: float, units: list[str], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    text = f"{size:.{precision}g}"
    # Go prints 999.9996 at 3 digits as "1e+03kB"; say "1MB" instead.
    if "e" in text and i < len(units) - 1:
        return f"{size / base:.{precision}g}{units[i + 1]}"
    return f"{text}{units[i]}"


def human_size(size: float, precision: int = 3) -> str:
    """Decimal size as ``docker images`` prints it: ``4.26MB``, ``1.23kB``, ``500B``."""
    return _scaled(float(size), 1000.0, _DECIMAL_UNITS, precision)


def bytes_size(size: float) -> str:
    """Binary size as ``docker info`` prints memory: ``1.944GiB``."""
    return _scaled(float(size), 1024.0, _BINARY_UNITS, 4)


def parse_ram(text: str) -> int:
    """go-units ``RAMInBytes``: ``64m``, ``1g``, ``512k``, ``1.5GiB`` or plain bytes.

    Raises ValueError with Docker's wording (``invalid size: 'abc'``).
    """
    global _RAM_RE
    if _RAM_RE is None:
        import re

        _RAM_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
    match = _RAM_RE.match(text)
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    number = float(match.group(1)) if match.group(1).count(".") <= 1 else None
    if number is None:
        raise ValueError(f"invalid size: '{text}'")
    unit = (match.group(2) or "").lower()
    return int(number * _RAM_MULT.get(unit, 1))


def ellipsis(text: str, width: int) -> str:
    """Docker's ``formatter.Ellipsis``: cut to ``width`` characters, the last being ``…``."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return text[0]
    return text[: width - 1] + "…"


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` for the text we show (printable unicode kept as is)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # nothing to escape (the common case)
    out = ['"']
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
               "\b": "\\b", "\f": "\\f", "\v": "\\v"}
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as Go's ``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`` lays them out.

    Each column but the last is as wide as its widest cell plus 3, and at least 10.
    """
    lines = [list(header), *[list(r) for r in rows]]
    ncols = len(header)
    widths = [max(10, max(len(line[i]) for line in lines) + 3) for i in range(ncols - 1)]
    out = []
    for line in lines:
        cells = [line[i].ljust(widths[i]) for i in range(ncols - 1)]
        out.append("".join(cells) + line[-1])
    return "\n".join(out) + "\n"


def short_id(ident: str, length: int = 12) -> str:
    """``stringid.TruncateID``: drop the ``sha256:`` and keep 12 hex digits."""
    if ":" in ident:
        ident = ident.split(":", 1)[1]
    return ident[:length]


def _utc(seconds: int) -> dt.datetime:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def rfc3339nano(seconds: int, nanos: int) -> str:
    """Go's ``time.RFC3339Nano`` (trailing zeros trimmed); zero time as Go prints it."""
    if seconds == 0 and nanos == 0:
        return "0001-01-01T00:00:00Z"
    base = _utc(seconds).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def rfc3339nano_fixed(seconds: int, nanos: int) -> str:
    """Docker's log timestamp (``RFC3339NanoFixed``): always nine fraction digits."""
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def ago(then: float, now: float) -> str:
    """``5 seconds ago``: the CREATED column."""
    return f"{human_duration(now - then)} ago"


def container_status(
    status: str, exit_code: int, started: float | None, finished: float | None, now: float
) -> str:
    """The STATUS column of ``docker ps`` (Docker's ``State.String``).

    ``status`` is the lowercase state word; ``started``/``finished`` are epoch
    seconds or None when unset.
    """
    if status == "running":
        return f"Up {human_duration(now - (started or now))}"
    if status == "paused":
        return f"Up {human_duration(now - (started or now))} (Paused)"
    if status == "restarting":
        return f"Restarting ({exit_code}) {human_duration(now - (finished or now))} ago"
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    if status == "exited":
        if finished is None:
            return "Created" if started is None else f"Exited ({exit_code})"
        return f"Exited ({exit_code}) {human_duration(now - finished)} ago"
    return "Created"


def ports(published: Sequence[tuple[str, int, int, str]], exposed: Sequence[str] = ()) -> str:
    """Docker's PORTS column: ``0.0.0.0:8080->80/tcp, 443/tcp`` (published, then exposed only).

    ``published`` holds (host ip, host port, container port, protocol).
    """
    out = []
    seen = set()
    for host_ip, host_port, port, proto in published:
        proto = proto or "tcp"
        out.append(f"{host_ip or '0.0.0.0'}:{host_port}->{port}/{proto}")
        seen.add(f"{port}/{proto}")
    for item in exposed:
        key = item if "/" in item else f"{item}/tcp"
        if key not in seen:
            out.append(key)
            seen.add(key)
    return ", ".join(out)
