"""Exit statuses and the CLI's own failures.

The engine's errors are :class:`skiff.common.errors.SkiffError` (imported only
once grpc is loaded); these are the failures the CLI itself detects. ``main``
turns each into a message on stderr and an exit status, as Docker does.
"""

from __future__ import annotations

#: Docker's statuses for ``run``/``create``/``start``: the engine failed, the
#: command could not be executed, the command was not found.
ENGINE_FAILED = 125
NOT_EXECUTABLE = 126
NOT_FOUND = 127
#: Any other failure, and the usage errors of commands other than run/create/start.
FAILED = 1
USAGE = 2
INTERRUPTED = 130

#: ErrorInfo reasons of a failed start, to the exit status Docker uses for them.
START_FAILURES = {"COMMAND_NOT_FOUND": NOT_FOUND, "COMMAND_NOT_EXECUTABLE": NOT_EXECUTABLE}


class CLIError(Exception):
    """A failure detected by the CLI; ``message`` is printed as is."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code


class Usage(CLIError):
    """Bad flags or arguments: printed with ``See 'skiff CMD --help'.``."""

    def __init__(self, message: str, code: int | None = None, prog: str | None = None):
        super().__init__(message, code)
        self.prog = prog


class DaemonUnreachable(CLIError):
    """No gateway answers at the address."""

    def __init__(self, host: str, detail: str = ""):
        super().__init__(f"Cannot connect to the skiff daemon at {host}. Is the skiff daemon running?")
        self.detail = detail
