"""One error vocabulary for the whole engine.

Domain code raises these; the gRPC layer maps them to status codes with a
machine-readable reason (``google.rpc.ErrorInfo``) at the server
(:func:`skiff.common.grpcerr.abort_with`) and back to the same classes at the
client (:func:`skiff.common.grpcerr.from_rpc_error`). Callers branch on the
class and on ``reason``, never on message text.
"""

from __future__ import annotations

import grpc

#: ErrorInfo.domain for every error skiff raises.
DOMAIN = "skiff.dev"


class SkiffError(Exception):
    """Base of every error skiff raises on purpose.

    ``reason`` is a stable UPPER_SNAKE_CASE identifier (for example
    ``IMAGE_NOT_FOUND``); ``metadata`` carries machine-readable details
    (for example the id of the container holding a name).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        return self.message


class NotFound(SkiffError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(SkiffError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class InvalidArgument(SkiffError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class FailedPrecondition(SkiffError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Conflict(SkiffError):
    """A concurrent or state conflict (gRPC ABORTED), e.g. a name already in use."""

    code = grpc.StatusCode.ABORTED
    default_reason = "CONFLICT"


class Unavailable(SkiffError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class PermissionDenied(SkiffError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(SkiffError):
    """Credentials are missing or wrong (a registry's 401)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class DeadlineExceeded(SkiffError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Internal(SkiffError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


#: status code -> exception class, used by the client side mapping.
BY_CODE: dict[grpc.StatusCode, type[SkiffError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Conflict,
        Unavailable,
        PermissionDenied,
        Unauthenticated,
        DeadlineExceeded,
        Internal,
    )
}

# Reasons that callers branch on. Keep them stable: they are part of the public API.
IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
CONTAINER_NOT_FOUND = "CONTAINER_NOT_FOUND"
NAME_IN_USE = "NAME_IN_USE"
INVALID_NAME = "INVALID_NAME"
CONTAINER_RUNNING = "CONTAINER_RUNNING"
CONTAINER_NOT_RUNNING = "CONTAINER_NOT_RUNNING"
UNSAFE_ARCHIVE = "UNSAFE_ARCHIVE"
IMAGE_IN_USE = "IMAGE_IN_USE"
# Start failures that the CLI turns into Docker's exit codes 126 and 127.
COMMAND_NOT_FOUND = "COMMAND_NOT_FOUND"
COMMAND_NOT_EXECUTABLE = "COMMAND_NOT_EXECUTABLE"
INVALID_NETWORK_MODE = "INVALID_NETWORK_MODE"
INVALID_SIGNAL = "INVALID_SIGNAL"
UNSUPPORTED_FILTER = "UNSUPPORTED_FILTER"
STDIN_UNSUPPORTED = "STDIN_UNSUPPORTED"
NO_COMMAND = "NO_COMMAND"
# Volumes and cp (issue 4).
VOLUME_NOT_FOUND = "VOLUME_NOT_FOUND"
VOLUME_IN_USE = "VOLUME_IN_USE"
PATH_NOT_FOUND = "PATH_NOT_FOUND"
# `logs` of a container whose log driver keeps nothing (`--log-driver none`).
LOGS_NOT_AVAILABLE = "LOGS_NOT_AVAILABLE"
