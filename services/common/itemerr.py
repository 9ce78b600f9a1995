"""Per-item errors of the batch calls (RemoveContainers, DeleteContainers, DeleteTasks, ...).

A batch call succeeds as a whole and lists, per item, the error the single call would have
failed with: a gRPC status code (number), the message and the ErrorInfo reason. These turn a
:class:`~skiff.common.errors.SkiffError` into those three fields and back.
"""

from __future__ import annotations

import grpc

from skiff.common import errors

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def fields(err: errors.SkiffError) -> tuple[int, str, str]:
    """(code, message, reason) of ``err``."""
    return err.code.value[0], err.message, err.reason


def error(code: int, message: str, reason: str) -> errors.SkiffError:
    """The skiff error the item carries (Internal for a code without a class)."""
    cls = errors.BY_CODE.get(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), errors.Internal)
    return cls(message or "unknown error", reason=reason or None)


def of_exception(exc: BaseException) -> errors.SkiffError:
    """A skiff error for anything raised while handling one item (an Internal for surprises)."""
    if isinstance(exc, errors.SkiffError):
        return exc
    return errors.Internal(f"internal error: {type(exc).__name__}: {exc}")
