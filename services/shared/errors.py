"""Typed errors of meshserve's cores.

Cores raise these and never import grpc. One server interceptor (error_interceptor.py) maps them to
google.rpc.Status with an ErrorInfo, plus a RetryInfo where a retry makes sense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

ERROR_DOMAIN = "meshserve.dev"
# ErrorInfo metadata under this prefix is also sent as response headers of the same name (OpenAI's).
RATE_LIMIT_HEADER_PREFIX = "x-ratelimit-"


class ErrorKind(Enum):
    """The class of failure; each maps to one gRPC status code."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UNAUTHENTICATED = "UNAUTHENTICATED"


# The HTTP status each kind of failure is answered with on the REST and OpenAI surfaces.
HTTP_STATUS = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.FAILED_PRECONDITION: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.ALREADY_EXISTS: 409,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
}


# eq=False keeps exceptions hashable and compared by identity, as exceptions are everywhere else.
@dataclass(eq=False)
class MeshError(Exception):
    """An error a caller can act on. `reason` is UPPER_SNAKE and stable; `message` is for people."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_seconds: float | None = None
    kind: ErrorKind = ErrorKind.INVALID_ARGUMENT
    # For the few errors whose HTTP answer is more precise than their kind's (431 for headers too large).
    http_status: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def http_status_of(error: MeshError) -> int:
    """The HTTP status an error is answered with on the REST and OpenAI surfaces."""
    return error.http_status or HTTP_STATUS.get(error.kind, 500)


def invalid_argument(reason: str, message: str, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), kind=ErrorKind.INVALID_ARGUMENT)


def not_found(reason: str, message: str, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), kind=ErrorKind.NOT_FOUND)


def already_exists(reason: str, message: str, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), kind=ErrorKind.ALREADY_EXISTS)


def resource_exhausted(reason: str, message: str, retry_after_seconds: float, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), retry_after_seconds, kind=ErrorKind.RESOURCE_EXHAUSTED)


def unavailable(reason: str, message: str, retry_after_seconds: float | None = None, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), retry_after_seconds, kind=ErrorKind.UNAVAILABLE)


def unauthenticated(reason: str, message: str, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), kind=ErrorKind.UNAUTHENTICATED)


def permission_denied(reason: str, message: str, **metadata: object) -> MeshError:
    return MeshError(reason, message, _as_strings(metadata), kind=ErrorKind.PERMISSION_DENIED)


def headers_too_large(size_bytes: int, limit_bytes: int) -> MeshError:
    """Request headers (gRPC metadata) over the mesh's limit: 431 over HTTP, RESOURCE_EXHAUSTED over gRPC.

    No retry helps, so unlike other RESOURCE_EXHAUSTED errors it carries no retry delay.
    """
    message = f"the request's headers are {size_bytes} bytes; the limit is {limit_bytes}"
    metadata = {"size_bytes": str(size_bytes), "limit_bytes": str(limit_bytes)}
    return MeshError("HEADERS_TOO_LARGE", message, metadata, kind=ErrorKind.RESOURCE_EXHAUSTED, http_status=431)


def _as_strings(metadata: dict[str, object]) -> dict[str, str]:
    # ErrorInfo.metadata is map<string, string>.
    return {key: str(value) for key, value in metadata.items()}
