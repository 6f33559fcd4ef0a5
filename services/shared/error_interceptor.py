"""The one place where errors become gRPC statuses, and so where each call's outcome is known.

Every handler is wrapped so that a MeshError becomes google.rpc.Status with an ErrorInfo (and a
RetryInfo where it has a delay), and anything else becomes INTERNAL without a traceback sent to the
client. The same wrapper records the outcome on the call's span (the reason, or a cancellation, which
the gRPC instrumentation misses) and counts it in meshserve_rpc_requests_total. It also guards request
decoding: a message that does not parse (for example a string field holding invalid UTF-8) is
INVALID_ARGUMENT, where grpc would otherwise answer INTERNAL. And it refuses a call whose metadata is over
the mesh's limit (header_limits.py) with RESOURCE_EXHAUSTED before its handler runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import Span

from services.shared.errors import RATE_LIMIT_HEADER_PREFIX, MeshError, invalid_argument
from services.shared.header_limits import MESH_METADATA_LIMIT_BYTES, check_header_size
from services.shared.status_details import to_grpc_status
from telemetry.metrics import RPC_DURATION, RPC_REQUESTS
from telemetry.spans import TRACE_ID_HEADER, record_cancellation, record_failure, trace_id_of

log = logging.getLogger(__name__)

# Health checks and reflection: infrastructure probing a service, not work done for a caller.
PROBE_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _UndecodableRequest:
    """Stands in for a request message that failed to parse, so the handler can refuse it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        refusal = _metadata_refusal(handler_call_details.invocation_metadata or ())
        wrapped = {
            "request_deserializer": _guarded_deserializer(handler.request_deserializer),
        }
        if handler.unary_unary:
            behavior = _refusing_unary(refusal) if refusal else handler.unary_unary
            wrapped["unary_unary"] = _wrap_unary(behavior, method, streaming_requests=False)
        elif handler.unary_stream:
            behavior = _refusing_stream(refusal) if refusal else handler.unary_stream
            wrapped["unary_stream"] = _wrap_stream(behavior, method, streaming_requests=False)
        elif handler.stream_unary:
            behavior = _refusing_unary(refusal) if refusal else handler.stream_unary
            wrapped["stream_unary"] = _wrap_unary(behavior, method, streaming_requests=True)
        elif handler.stream_stream:
            behavior = _refusing_stream(refusal) if refusal else handler.stream_stream
            wrapped["stream_stream"] = _wrap_stream(behavior, method, streaming_requests=True)
        return handler._replace(**wrapped)


def _metadata_refusal(metadata: Any) -> MeshError | None:
    try:
        check_header_size(metadata, MESH_METADATA_LIMIT_BYTES)
    except MeshError as error:
        return error
    return None


def _refusing_unary(error: MeshError) -> Callable[..., Awaitable[Any]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise error

    return refuse


def _refusing_stream(error: MeshError) -> Callable[..., AsyncIterator[Any]]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        raise error
        yield  # pragma: no cover - makes this an async generator, as a streaming handler is

    return refuse


async def responses_of(outcome: Any) -> AsyncIterator[Any]:
    """A streaming handler either yields its responses or is a coroutine that writes them with
    context.write() (as grpc's own health servicer does); both look like an async iterator here."""
    if inspect.isawaitable(outcome):
        await outcome
        return
    async for response in outcome:
        yield response


def _guarded_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            return _UndecodableRequest(error)

    return deserialize


def _refuse_if_undecodable(request: Any) -> None:
    if isinstance(request, _UndecodableRequest):
        raise invalid_argument(
            "MALFORMED_REQUEST",
            "the request message could not be decoded; string fields must hold valid UTF-8",
        )


async def _checked_requests(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        _refuse_if_undecodable(request)
        yield request


def _prepare(request: Any, streaming_requests: bool) -> Any:
    if streaming_requests:
        return _checked_requests(request)
    _refuse_if_undecodable(request)
    return request


class _CallRecord:
    """The outcome of one call, counted once it ends; health and reflection probes are not counted."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.code = grpc.StatusCode.OK
        self._started = time.monotonic()

    def done(self) -> None:
        if self.method.startswith(PROBE_METHOD_PREFIXES):
            return
        RPC_REQUESTS.labels(self.method, self.code.name).inc()
        RPC_DURATION.labels(self.method).observe(time.monotonic() - self._started)


def retry_headers(error: MeshError) -> tuple[tuple[str, str], ...]:
    """Retry-After and the x-ratelimit-* limits a refusal carries, as metadata: the edge answers a REST
    call's error with them as HTTP headers."""
    headers = [(key, value) for key, value in error.metadata.items() if key.startswith(RATE_LIMIT_HEADER_PREFIX)]
    if error.retry_after_seconds is not None:
        # Whole seconds, rounded up: a retry sooner would only be refused again.
        headers.append(("retry-after", str(max(1, math.ceil(error.retry_after_seconds)))))
    return tuple(headers)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, record: _CallRecord) -> None:
    span = trace.get_current_span()
    # A failed call names its trace too, so a caller can find out what happened to it.
    trace_header = ((TRACE_ID_HEADER, trace_id_of(span)),) if span.get_span_context().is_valid else ()
    if isinstance(error, MeshError):
        status = to_grpc_status(error)
        record.code = status.code
        record_failure(span, status.code, error.reason, error.message)
        await context.abort(
            status.code, status.details, (*status.trailing_metadata, *trace_header, *retry_headers(error))
        )
    log.exception("unexpected error in %s", record.method, exc_info=error)
    record.code = grpc.StatusCode.INTERNAL
    record_failure(span, grpc.StatusCode.INTERNAL, type(error).__name__, "internal error")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error", trace_header)


def _record_cancellation(context: grpc.aio.ServicerContext, record: _CallRecord, span: Span) -> None:
    remaining = context.time_remaining()
    deadline_passed = remaining is not None and remaining <= 0
    record.code = grpc.StatusCode.DEADLINE_EXCEEDED if deadline_passed else grpc.StatusCode.CANCELLED
    record_cancellation(span, deadline_passed)


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str, streaming_requests: bool
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record, span = _CallRecord(method), trace.get_current_span()
        try:
            return await behavior(_prepare(request, streaming_requests), context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            _record_cancellation(context, record, span)
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place errors are mapped
            await _abort(context, error, record)
        finally:
            record.done()

    return handle


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]], method: str, streaming_requests: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        # The call's span, taken now: a caller that goes away may have this generator closed from another
        # task, where the current span is some other one.
        record, span = _CallRecord(method), trace.get_current_span()
        try:
            async for response in responses_of(behavior(_prepare(request, streaming_requests), context)):
                yield response
        except grpc.aio.AbortError:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # A caller that goes away while this handler waits at a yield closes it (GeneratorExit) rather
            # than cancelling it: both are a cancelled call.
            _record_cancellation(context, record, span)
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place errors are mapped
            await _abort(context, error, record)
        finally:
            record.done()

    return handle
