"""The error interceptor on a real gRPC server: typed errors become google.rpc.Status, nothing else leaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.shared.errors import invalid_argument, resource_exhausted
from services.shared.grpc_server import add_health_and_reflection, create_server, set_serving
from services.shared.status_details import details_of

SERVICE = "test.v1.Errors"


async def refuse(request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext) -> wrappers_pb2.StringValue:
    raise invalid_argument("BAD_THING", "the thing is bad", field="thing")


async def crash(request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext) -> wrappers_pb2.StringValue:
    raise RuntimeError("secret internal detail")


async def stream_then_shed(
    request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext
) -> AsyncIterator[wrappers_pb2.StringValue]:
    yield wrappers_pb2.StringValue(value="first")
    raise resource_exhausted("TOO_BUSY", "come back later", retry_after_seconds=1.5)


async def echo_all(
    requests: AsyncIterator[wrappers_pb2.StringValue], context: grpc.aio.ServicerContext
) -> AsyncIterator[wrappers_pb2.StringValue]:
    async for request in requests:
        yield request


@pytest.fixture()
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = create_server()
    decode, encode = wrappers_pb2.StringValue.FromString, wrappers_pb2.StringValue.SerializeToString
    handlers = {
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse, decode, encode),
        "Crash": grpc.unary_unary_rpc_method_handler(crash, decode, encode),
        "StreamThenShed": grpc.unary_stream_rpc_method_handler(stream_then_shed, decode, encode),
        "EchoAll": grpc.stream_stream_rpc_method_handler(echo_all, decode, encode),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client:
        yield client
    await server.stop(None)


def method(channel: grpc.aio.Channel, kind: str, name: str, raw: bool = False):
    factory = {"unary": channel.unary_unary, "stream": channel.unary_stream, "bidi": channel.stream_stream}[kind]
    serializer = (lambda data: data) if raw else wrappers_pb2.StringValue.SerializeToString
    return factory(f"/{SERVICE}/{name}", serializer, wrappers_pb2.StringValue.FromString)


async def test_a_typed_error_carries_its_reason_and_metadata(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await method(channel, "unary", "Refuse")(wrappers_pb2.StringValue(value="x"))
    details = details_of(refused.value)
    assert (details.code, details.reason, details.metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_THING",
        {"field": "thing"},
    )
    assert details.message == "the thing is bad"
    assert details.retry_after_seconds is None


async def test_an_unexpected_error_is_internal_without_its_details(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await method(channel, "unary", "Crash")(wrappers_pb2.StringValue(value="x"))
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (failed.value.details() or "")


async def test_an_error_mid_stream_arrives_after_the_messages_with_a_retry_delay(channel: grpc.aio.Channel) -> None:
    call = method(channel, "stream", "StreamThenShed")(wrappers_pb2.StringValue(value="x"))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as shed:
        async for message in call:
            received.append(message.value)
    assert received == ["first"]
    details = details_of(shed.value)
    assert (details.code, details.reason, details.retry_after_seconds) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_BUSY",
        1.5,
    )


async def test_an_undecodable_message_in_a_stream_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    valid = wrappers_pb2.StringValue(value="ok").SerializeToString()
    invalid_utf8 = b"\x0a\x02\xff\xfe"

    async def requests() -> AsyncIterator[bytes]:
        yield valid
        yield invalid_utf8

    received = []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for message in method(channel, "bidi", "EchoAll", raw=True)(requests()):
            received.append(message.value)
    assert received == ["ok"]
    assert details_of(refused.value).reason == "MALFORMED_REQUEST"


async def test_a_streaming_handler_that_writes_through_its_context_still_works() -> None:
    """grpc's own aio health servicer streams Watch with context.write(); the interceptor must not break it."""
    server = create_server()
    health = await add_health_and_reflection(server, ["test.v1.Errors"])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client:
            watch = health_pb2_grpc.HealthStub(client).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await set_serving(health, ["test.v1.Errors"])
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    finally:
        await server.stop(None)


async def test_an_idle_channel_that_pings_is_not_cut_off() -> None:
    """A client pinging an idle channel every 1.5 s, as mesh clients do every 10 s, keeps its channel."""
    server = create_server()
    await add_health_and_reflection(server, [])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = [("grpc.keepalive_time_ms", 1500), ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.max_pings_without_data", 0)]  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as client:
            health = health_pb2_grpc.HealthStub(client)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            # Long enough for grpc's default server to count two ping strikes and send GOAWAY.
            await asyncio.sleep(5)
            assert client.get_state() == grpc.ChannelConnectivity.READY
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(None)
