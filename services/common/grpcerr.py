"""Map skiff errors to gRPC statuses and back.

Server side: :func:`to_status` builds a ``google.rpc.Status`` with an
``ErrorInfo`` detail; :func:`handle` is a context manager for servicers.
Client side: :func:`from_rpc_error` turns a ``grpc.RpcError`` back into the
same :class:`~skiff.common.errors.SkiffError` subclass, with its reason and
metadata, so callers in another process test the same class.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from skiff.common import errors

log = logging.getLogger(__name__)


def to_status(err: errors.SkiffError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=errors.DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=err.code.value[0], message=err.message, details=[detail])
    return rpc_status.to_status(status)


def abort(context: grpc.ServicerContext, err: errors.SkiffError) -> NoReturn:
    context.abort_with_status(to_status(err))
    raise AssertionError("unreachable")  # abort_with_status raises


@contextlib.contextmanager
def handle(context: grpc.ServicerContext) -> Iterator[None]:
    """Run a servicer body; turn skiff errors (and surprises) into statuses."""
    try:
        yield
    except errors.SkiffError as err:
        abort(context, err)
    except grpc.RpcError as err:
        # A call to another service failed: pass its error on unchanged in kind.
        abort(context, from_rpc_error(err))
    except Exception as err:  # the last line of defence of a server
        if type(err) is Exception:
            raise  # grpc's context.abort() raises a bare Exception: let it through
        log.exception("internal error")
        abort(context, errors.Internal(f"internal error: {type(err).__name__}: {err}"))



def from_rpc_error(err: grpc.RpcError) -> errors.SkiffError:
    """The skiff error a failed call carries (Unavailable/Internal when it carries none)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    reason = None
    metadata: dict[str, str] = {}
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except Exception:  # a malformed trailer is not worth a crash
        status = None
    if status is not None:
        message = status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
    cls = errors.BY_CODE.get(code)
    if cls is None:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            cls = errors.InvalidArgument
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            cls = errors.FailedPrecondition
        else:
            cls = errors.Internal
    if code == grpc.StatusCode.UNAVAILABLE and reason is None:
        reason = "SERVICE_UNAVAILABLE"
    return cls(message or code.name, reason=reason, metadata=metadata)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Client side: re-raise a failed call as the matching skiff error."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None


__all__ = ["abort", "from_rpc_error", "handle", "to_status", "translated"]
