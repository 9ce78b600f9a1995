"""Docker's detach keys: ``ctrl-p,ctrl-q`` (the default) or e.g. ``ctrl-a,x``.

Each comma-separated item is one character, or ``ctrl-`` and one of ``a``-``z``, ``@``,
``[``, ``\\``, ``]``, ``^``, ``_`` (the control codes 0-31). :class:`Matcher` finds the
sequence in a byte stream fed in pieces: bytes that may start it are held back until
the next byte decides, so the keys never reach the container.
"""

from __future__ import annotations

DEFAULT = "ctrl-p,ctrl-q"
_CTRL = {**{chr(ord("a") + i): i + 1 for i in range(26)}, "@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse(keys: str) -> bytes:
    """The byte sequence of ``keys`` (empty: the default); ValueError with Docker's wording."""
    out = bytearray()
    for key in (keys or DEFAULT).split(","):
        if len(key) == 1:
            out.append(ord(key))
            continue
        code = _CTRL.get(key[5:]) if key.startswith("ctrl-") and len(key) == 6 else None
        if code is None:
            raise ValueError(f"Invalid detach keys ({keys}) provided: unknown character '{key}'")
        out.append(code)
    if any(b > 127 for b in out):
        raise ValueError(f"Invalid detach keys ({keys}) provided: not ASCII")
    return bytes(out)


class Matcher:
    """Strips the detach sequence out of a stream and tells when it was typed."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to pass on, whether the sequence is complete); after True, stop feeding."""
        out = bytearray()
        for b in data:
            self.held += bytes((b,))
            if not self.keys:
                out += self.held
                self.held = b""
            elif self.keys.startswith(self.held):
                if len(self.held) == len(self.keys):
                    self.held = b""
                    return bytes(out), True
            else:
                # Not the sequence: pass on all but the last byte, which may start it anew.
                out += self.held[:-1]
                self.held = self.held[-1:]
                if not self.keys.startswith(self.held):
                    out += self.held
                    self.held = b""
        return bytes(out), False

    def flush(self) -> bytes:
        """What is held back, at the end of the stream."""
        held, self.held = self.held, b""
        return held
