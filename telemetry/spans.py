"""Span helpers shared by the services: one tracer, error and cancellation annotations, client spans.

The gRPC server instrumentation records a span per call but not why it failed, and nothing at all for a
call that was cancelled; these helpers fill that in where the mesh knows the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

tracer = trace.get_tracer("meshserve")

# The response header (gRPC metadata) that tells a client which trace holds its request.
TRACE_ID_HEADER = "x-meshserve-trace-id"
RPC_STATUS = "rpc.grpc.status_code"
ERROR_TYPE = "error.type"


def record_failure(span: Span, code: grpc.StatusCode, reason: str, message: str) -> None:
    span.set_attribute(RPC_STATUS, code.value[0])
    span.set_attribute(ERROR_TYPE, reason or code.name)
    span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}"))


def record_cancellation(span: Span, deadline_passed: bool) -> None:
    code = grpc.StatusCode.DEADLINE_EXCEEDED if deadline_passed else grpc.StatusCode.CANCELLED
    reason = "deadline_exceeded" if deadline_passed else "cancelled"
    record_failure(span, code, reason, "the deadline passed" if deadline_passed else "the caller went away")


def trace_id_of(span: Span) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


@contextmanager
def client_span(method: str, peer: str) -> Iterator[tuple[Span, list[tuple[str, str]]]]:
    """A CLIENT span around an outgoing call, and the metadata that carries its context to the callee.

    The span is not made current: calls the caller makes while this one is open (a slot is held while
    the engine is called) stay siblings under the caller's span, as they are.
    """
    service, _, name = method.strip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name, "server.address": peer}
    span = tracer.start_span(method.strip("/"), kind=SpanKind.CLIENT, attributes=attributes)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    try:
        yield span, list(carrier.items())
    except (asyncio.CancelledError, GeneratorExit):
        record_cancellation(span, deadline_passed=False)
        raise
    finally:
        span.end()
