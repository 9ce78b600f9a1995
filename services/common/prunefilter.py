"""Docker's prune filters: ``until``, ``label`` and ``label!`` (image, network and volume prune).

* ``until=<t>``: only what was created before ``t``: a Unix timestamp (``seconds[.nanos]``),
  a Go duration before now (``10m``, ``1h30m``) or an RFC 3339 date or time
  (``2006-01-02``, ``2006-01-02T15:04:05[.nanos][Z|±hh:mm]``; local time without a zone).
  At most one, as Docker (``more than one until filter specified``).
* ``label=<key>[=<value>]``: only what has that label (every such filter must match);
  ``label!=<key>[=<value>]``: not what has it (Docker's rule: excluded when every
  ``label!`` filter matches).

A key the caller does not take is INVALID_ARGUMENT ``invalid filter '<key>'``, as Docker's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from skiff.common.durations import parse_date_ns, parse_duration
from skiff.common.errors import UNSUPPORTED_FILTER, InvalidArgument

KEYS = ("until", "label", "label!")

_UNIX = re.compile(r"^\d+(?:\.\d{1,9})?$")


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch of an ``until`` value; ValueError (Docker's message) otherwise."""
    now = time.time_ns() if now_ns is None else now_ns
    if _UNIX.match(text):
        sec, _, frac = text.partition(".")
        return int(sec) * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)
    at = parse_date_ns(text)
    if at is not None:
        return at
    try:
        return now - parse_duration(text)
    except ValueError:
        raise ValueError(f'failed to parse value as time or duration: "{text}"') from None


def _has(labels: Mapping[str, str], spec: str) -> bool:
    key, sep, value = spec.partition("=")
    return key in labels and (not sep or labels[key] == value)


@dataclass(frozen=True)
class PruneFilter:
    #: nanoseconds since the epoch; None: no ``until``
    until: int | None = None
    labels: tuple[str, ...] = ()
    not_labels: tuple[str, ...] = ()

    def matches(self, created_ns: int, labels: Mapping[str, str]) -> bool:
        """Whether something created at ``created_ns`` with ``labels`` may be pruned."""
        if self.until is not None and created_ns >= self.until:
            return False
        if not all(_has(labels, spec) for spec in self.labels):
            return False
        return not (self.not_labels and all(_has(labels, spec) for spec in self.not_labels))

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        return self.matches(0, labels)


def parse(filters: Iterable[tuple[str, str]], keys: Iterable[str] = KEYS, now_ns: int | None = None) -> PruneFilter:
    """The filter of ``(key, value)`` pairs; INVALID_ARGUMENT for a key not in ``keys`` or a bad value."""
    allowed = set(keys)
    until: list[int] = []
    labels: list[str] = []
    not_labels: list[str] = []
    for key, value in filters:
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'", reason=UNSUPPORTED_FILTER)
        if key == "until":
            if until:
                raise InvalidArgument("more than one until filter specified")
            try:
                until.append(parse_time(value, now_ns))
            except ValueError as err:
                raise InvalidArgument(str(err)) from None
        elif key == "label":
            labels.append(value)
        else:
            not_labels.append(value)
    return PruneFilter(until[0] if until else None, tuple(labels), tuple(not_labels))
