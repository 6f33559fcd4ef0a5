"""A real OTLP/gRPC trace receiver for tests: it implements TraceService/Export and keeps every span.

It runs a synchronous grpc server on its own thread pool, so it serves the same whether the test that
uses it is synchronous or is an asyncio test whose event loop is busy elsewhere. Waiting is offered
both ways: wait_for blocks the calling thread, wait_for_async only yields to the running loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

Attributes = dict[str, Any]
SpanPredicate = Callable[[list["ReceivedSpan"]], bool]


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, flattened, with the service.name of the resource it came with.

    Ids are lowercase hex (32 digits for a trace, 16 for a span); parent_span_id is "" for a root.
    kind and status_code are the OTLP enum numbers (Span.SpanKind, Status.StatusCode).
    """

    service_name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    status_code: int
    status_message: str
    attributes: Attributes = field(hash=False)
    events: list[tuple[str, Attributes]] = field(hash=False)


class OtlpReceiver:
    """An OTLP/gRPC collector on 127.0.0.1:<free port>; use start()/stop() or `with OtlpReceiver() as r`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._port = 0
        self._server: grpc.Server | None = None
        self._spans: list[ReceivedSpan] = []
        self._exports = 0
        self._changed = threading.Condition()

    @property
    def endpoint(self) -> str:
        """host:port, as OTLP exporters and Envoy clusters want it."""
        if not self._port:
            raise RuntimeError("the receiver is not started")
        return f"{self._host}:{self._port}"

    @property
    def exports(self) -> int:
        """How many Export calls arrived, empty ones included."""
        with self._changed:
            return self._exports

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._receive), server)
        self._port = server.add_insecure_port(f"{self._host}:0")
        server.start()
        self._server = server
        return self

    def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait(grace + 5)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def spans_for_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id.lower()]

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()

    def wait_for(self, predicate: SpanPredicate, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Blocks until predicate(all spans so far) holds and returns the spans; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(self._summary(timeout))
                self._changed.wait(left)
            return list(self._spans)

    async def wait_for_async(
        self, predicate: SpanPredicate, timeout: float = 10.0, poll: float = 0.05
    ) -> list[ReceivedSpan]:
        """wait_for for asyncio tests: polls without blocking the running event loop."""
        deadline = time.monotonic() + timeout
        while not predicate(spans := self.spans()):
            if time.monotonic() >= deadline:
                raise TimeoutError(self._summary(timeout))
            await asyncio.sleep(poll)
        return spans

    def _receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = [
            _span(_service_name(resource_spans), span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._changed:
            self._exports += 1
            self._spans.extend(received)
            self._changed.notify_all()

    def _summary(self, timeout: float) -> str:
        with self._changed:
            spans, exports = list(self._spans), self._exports
        lines = [f"no match after {timeout}s; {exports} export calls brought {len(spans)} spans:"]
        lines += [
            f"  {span.service_name} {span.name!r} kind={span.kind} trace={span.trace_id} "
            f"span={span.span_id} parent={span.parent_span_id or '-'}"
            for span in spans[-50:]
        ]
        return "\n".join(lines)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receive: Callable[[trace_service_pb2.ExportTraceServiceRequest], None]) -> None:
        self._receive = receive

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receive(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def _service_name(resource_spans: trace_pb2.ResourceSpans) -> str:
    return str(_attributes(resource_spans.resource.attributes).get("service.name", ""))


def _span(service_name: str, span: trace_pb2.Span) -> ReceivedSpan:
    return ReceivedSpan(
        service_name=service_name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        status_code=span.status.code,
        status_message=span.status.message,
        attributes=_attributes(span.attributes),
        events=[(event.name, _attributes(event.attributes)) for event in span.events],
    )


def _attributes(pairs: Any) -> Attributes:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)
