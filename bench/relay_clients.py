"""Closed-loop gRPC streams for the relay benchmark: many at once on one event loop, every message timed.

Two ways in: straight to one gateway, as the edge calls it (its certificate, and the identity header the
edge sets), and through Envoy's TLS listener with the mesh's API key, as a client calls it. Streams are
spread over several connections, as many clients would open them: Envoy takes at most 100 streams on one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.certs import dev_identity
from services.shared.channels import open_channel
from services.shared.identity import IDENTITY_HEADER, CallerLimits, Identity, Scope, Surface, encode_identity
from services.shared.status_details import details_of

STREAMS_PER_CONNECTION = 64
_GENERATE = "/meshserve.gateway.v1.GatewayService/Generate"
# Each client's own connection: grpc would otherwise share one connection between channels to one target.
_OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@dataclass
class StreamRecord:
    """One request as its client saw it: when it was sent, and each message's arrival and token count."""

    sent: float
    arrivals: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    failure: str = ""
    finished: bool = False


@dataclass(frozen=True)
class RelayTarget:
    """Where the streams go: channels to open and the metadata every call carries."""

    name: str
    open_channel: Callable[[], grpc.aio.Channel]
    metadata: tuple[tuple[str, str], ...]


def gateway_target(state_dir: Path, gateway_port: int) -> RelayTarget:
    """One gateway, called as the edge calls it."""
    identity = Identity("bench:relay", frozenset({Scope.INFERENCE}), CallerLimits(), Surface.GRPC, _GENERATE)
    tls = dev_identity(state_dir / "certs", "edge")
    return RelayTarget(
        "one gateway",
        lambda: open_channel(f"127.0.0.1:{gateway_port}", tls, peer="gateway"),
        ((IDENTITY_HEADER, encode_identity(identity)),),
    )


def edge_target(state_dir: Path, https_port: int, api_key: str) -> RelayTarget:
    """Envoy's TLS listener, with the mesh's API key."""
    credentials = grpc.ssl_channel_credentials(root_certificates=(state_dir / "certs" / "ca.pem").read_bytes())
    return RelayTarget(
        "through Envoy",
        lambda: grpc.aio.secure_channel(f"localhost:{https_port}", credentials, options=_OWN_CONNECTION),
        (("authorization", f"Bearer {api_key}"),),
    )


async def run_streams(
    target: RelayTarget, model: str, concurrency: int, max_tokens: int, stop_at: float, ramp_seconds: float
) -> list[StreamRecord]:
    """`concurrency` clients, each sending one request after another until `stop_at` (loop time); a stream
    still running then is cancelled. The clients start spread over `ramp_seconds`, as many independent
    clients would, rather than all at one instant. Returns every request's record."""
    channels = [target.open_channel() for _ in range(-(-concurrency // STREAMS_PER_CONNECTION))]
    request = pb.GenerateRequest(model=model, prompt="Relay these tokens.", max_tokens=max_tokens)
    records: list[StreamRecord] = []
    try:
        stubs = [gateway_pb2_grpc.GatewayServiceStub(channel) for channel in channels]
        clients = [
            _closed_loop(stubs[number % len(stubs)], request, target.metadata, stop_at, records,
                         start_after=ramp_seconds * number / concurrency)
            for number in range(concurrency)
        ]  # fmt: skip
        await asyncio.gather(*clients)
    finally:
        for channel in channels:
            await channel.close()
    return records


async def _closed_loop(
    stub, request, metadata, stop_at: float, records: list[StreamRecord], start_after: float
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(start_after)
    while loop.time() < stop_at:
        record = StreamRecord(loop.time())
        records.append(record)
        call = stub.Generate(request, metadata=metadata)
        reading = asyncio.ensure_future(_read(call, record, loop))
        done, _ = await asyncio.wait({reading}, timeout=max(0.0, stop_at - loop.time()))
        if not done:
            call.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            return


async def _read(call, record: StreamRecord, loop: asyncio.AbstractEventLoop) -> None:
    try:
        async for message in call:
            record.arrivals.append(loop.time())
            record.tokens.append(message.token_count)
        record.finished = True
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.CANCELLED:
            details = details_of(error)
            record.failure = f"{details.code.name}:{details.reason}" if details.reason else details.code.name
