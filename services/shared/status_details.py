"""Conversion between MeshError and google.rpc.Status, in both directions.

Servers use to_grpc_status() (through the error interceptor); clients and tests use
details_of() to read the ErrorInfo and RetryInfo of a failed call.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.shared.errors import ERROR_DOMAIN, ErrorKind, MeshError

_CODES = {
    ErrorKind.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorKind.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: code_pb2.UNAVAILABLE,
    ErrorKind.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    ErrorKind.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    ErrorKind.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorKind.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    ErrorKind.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
}


def to_grpc_status(error: MeshError) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(error))


def to_status_proto(error: MeshError) -> status_pb2.Status:
    """The google.rpc.Status of an error: its code, message, ErrorInfo and, where a retry makes sense, RetryInfo."""
    status = status_pb2.Status(code=_CODES[error.kind], message=error.message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


@dataclass(frozen=True)
class ErrorDetails:
    """What a client learns from a failed call beyond its status code."""

    code: grpc.StatusCode
    message: str
    reason: str | None
    metadata: dict[str, str]
    retry_after_seconds: float | None


def details_of(error: grpc.RpcError) -> ErrorDetails:
    status = rpc_status.from_call(error)
    reason, metadata, retry_after = None, {}, None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return ErrorDetails(error.code(), error.details() or "", reason, metadata, retry_after)


_KINDS = {code: kind for kind, code in _CODES.items()}
# Codes that say the upstream failed rather than the request: a retry elsewhere or later may work.
_UPSTREAM_RETRY_SECONDS = 1.0


def to_mesh_error(error: grpc.RpcError, upstream: str) -> MeshError:
    """The typed error behind a failed call, so it travels on unchanged; transport failures become UNAVAILABLE."""
    details = details_of(error)
    kind = _KINDS.get(details.code.value[0])
    if kind is not None and details.reason:
        return MeshError(details.reason, details.message, details.metadata, details.retry_after_seconds, kind)
    if details.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return MeshError("DEADLINE_EXCEEDED", "the request's deadline passed", kind=ErrorKind.DEADLINE_EXCEEDED)
    return MeshError(
        f"{upstream.upper()}_UNAVAILABLE",
        f"{upstream} failed: {details.code.name} {details.message}".strip(),
        {"upstream": upstream, "upstream_code": details.code.name},
        _UPSTREAM_RETRY_SECONDS,
        ErrorKind.UNAVAILABLE,
    )
