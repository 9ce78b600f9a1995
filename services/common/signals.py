"""Signal names as users write them (``KILL``, ``SIGKILL``, ``9``) to numbers.

Parsed in the gateway so a bad signal is an InvalidArgument before any
backend is called, and execsvc only ever sees a number; graphsvc checks an
image's ``STOPSIGNAL`` with it.
"""

from __future__ import annotations

import signal

from skiff.common import errors as _errors
from skiff.common.errors import InvalidArgument

INVALID_SIGNAL = _errors.INVALID_SIGNAL
#: Highest signal number Linux accepts (SIGRTMAX).
_MAX_SIGNAL = 64


def parse_signal(text: str, default: signal.Signals) -> int:
    """The signal number for ``text``; ``default`` when it is empty."""
    value = text.strip()
    if not value:
        return int(default)
    if value.isdigit():
        number = int(value)
        if 1 <= number <= _MAX_SIGNAL:
            return number
        raise InvalidArgument(f"invalid signal: {text}", reason=INVALID_SIGNAL)
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise InvalidArgument(f"invalid signal: {text}", reason=INVALID_SIGNAL) from None
