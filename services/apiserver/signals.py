"""Signal names for the gateway: parsed there so a bad signal is an InvalidArgument
before any backend is called (the parser lives in skiff.common.signals)."""

from skiff.common.signals import INVALID_SIGNAL, parse_signal

__all__ = ["INVALID_SIGNAL", "parse_signal"]
