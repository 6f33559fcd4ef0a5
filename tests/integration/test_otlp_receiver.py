"""The test OTLP receiver, fed by the real OpenTelemetry SDK and its OTLP/gRPC exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, format_span_id, format_trace_id

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

SERVICE = "receiver-test"
# OTLP enum numbers: Span.SpanKind and Status.StatusCode.
SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 2, 3
STATUS_CODE_ERROR = 2


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture()
def provider(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    # Not the global provider: each test gets its own, exporting each span as it ends.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    yield provider
    provider.shutdown()


@pytest.fixture()
def tracer(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("tests.otlp_receiver")


def test_the_endpoint_is_a_loopback_port(receiver: OtlpReceiver) -> None:
    host, port = receiver.endpoint.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


def test_ids_parents_and_service_name_arrive_intact(receiver: OtlpReceiver, tracer: Tracer) -> None:
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            pass
    trace_id = format_trace_id(parent.get_span_context().trace_id)
    spans = receiver.wait_for(lambda spans: len(spans) == 2, timeout=10)
    by_name = {span.name: span for span in spans}
    assert {span.service_name for span in spans} == {SERVICE}
    assert {span.trace_id for span in spans} == {trace_id}
    assert len(trace_id) == 32 and trace_id == trace_id.lower()
    assert by_name["parent"].span_id == format_span_id(parent.get_span_context().span_id)
    assert by_name["parent"].parent_span_id == ""
    assert by_name["child"].span_id == format_span_id(child.get_span_context().span_id)
    assert by_name["child"].parent_span_id == by_name["parent"].span_id
    assert (by_name["parent"].kind, by_name["child"].kind) == (SPAN_KIND_SERVER, SPAN_KIND_CLIENT)
    assert receiver.spans_for_trace(trace_id.upper()) == receiver.spans_for_trace(trace_id) == spans


def test_attributes_events_and_status_are_decoded(receiver: OtlpReceiver, tracer: Tracer) -> None:
    attributes = {
        "gen_ai.request.model": "gemma-3-270m",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "meshserve.streamed": True,
        "meshserve.stop": ["\n\n", "END"],
        "meshserve.slots": [1, 2],
    }
    with tracer.start_as_current_span("generate", attributes=attributes) as span:
        span.add_event("first_token", {"gen_ai.usage.output_tokens": 1})
        span.set_status(Status(StatusCode.ERROR, "engine stopped"))
    (received,) = receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    assert received.attributes == attributes
    assert received.events == [("first_token", {"gen_ai.usage.output_tokens": 1})]
    assert (received.status_code, received.status_message) == (STATUS_CODE_ERROR, "engine stopped")


def test_received_spans_are_frozen_and_hashable(receiver: OtlpReceiver, tracer: Tracer) -> None:
    with tracer.start_as_current_span("one", attributes={"key": "value"}):
        pass
    (span,) = receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    assert isinstance(span, ReceivedSpan)
    with pytest.raises(AttributeError):
        span.name = "other"  # type: ignore[misc]
    assert span in {span}


def test_wait_for_times_out_with_a_summary_of_what_arrived(receiver: OtlpReceiver, tracer: Tracer) -> None:
    with tracer.start_as_current_span("lonely"):
        pass
    receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    with pytest.raises(TimeoutError) as timed_out:
        receiver.wait_for(lambda spans: len(spans) == 2, timeout=0.2)
    assert "1 spans" in str(timed_out.value) and "'lonely'" in str(timed_out.value)


def test_clear_forgets_what_arrived(receiver: OtlpReceiver, tracer: Tracer) -> None:
    with tracer.start_as_current_span("old"):
        pass
    receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    receiver.clear()
    assert receiver.spans() == []
    assert receiver.exports >= 1


async def test_it_receives_while_an_event_loop_runs(receiver: OtlpReceiver, tracer: Tracer) -> None:
    # The exporter blocks until the receiver answers, so it runs in a thread; the receiver serves
    # from its own threads and never needs this loop.
    def export() -> None:
        with tracer.start_as_current_span("from-a-thread"):
            pass

    await asyncio.to_thread(export)
    (span,) = await receiver.wait_for_async(lambda spans: len(spans) == 1, timeout=10)
    assert span.name == "from-a-thread"
    with pytest.raises(TimeoutError):
        await receiver.wait_for_async(lambda spans: len(spans) == 2, timeout=0.2)


def test_it_can_be_started_and_stopped_without_a_context_manager() -> None:
    receiver = OtlpReceiver().start()
    try:
        assert receiver.spans() == []
    finally:
        receiver.stop()
    with pytest.raises(RuntimeError):
        _ = OtlpReceiver().endpoint
