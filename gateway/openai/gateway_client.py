"""The front's grpc adapter: meshserve.gateway.v1 over mTLS, failures as typed MeshErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from gateway.clients import failed_call
from services.shared.channels import open_channel
from services.shared.identity import IDENTITY_HEADER
from services.shared.tls import TlsFiles
from telemetry.spans import client_span

GENERATE = "/meshserve.gateway.v1.GatewayService/Generate"
LIST_MODELS = "/meshserve.gateway.v1.GatewayService/ListModels"


class GatewayClient:
    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        self._address = address
        self._channel = open_channel(address, tls, peer="gateway")
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def generate(
        self, request: pb.GenerateRequest, timeout: float, identity: str
    ) -> AsyncIterator[pb.GenerateResponse]:
        """The gateway's stream; closing it early cancels the call, and so the work, all the way down.

        `identity` is the edge's identity header, relayed as it came.
        """
        with client_span(GENERATE, self._address) as (span, metadata):
            call = self._stub.Generate(request, timeout=timeout, metadata=[*metadata, (IDENTITY_HEADER, identity)])
            try:
                async for message in call:
                    yield message
            except grpc.aio.AioRpcError as error:
                raise failed_call(span, error, "gateway") from None
            finally:
                call.cancel()

    async def models(self, identity: str, timeout: float = 5.0) -> pb.ListModelsResponse:
        with client_span(LIST_MODELS, self._address) as (span, metadata):
            relayed = [*metadata, (IDENTITY_HEADER, identity)]
            try:
                return await self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout, metadata=relayed)
            except grpc.aio.AioRpcError as error:
                raise failed_call(span, error, "gateway") from None

    async def ready(self, timeout: float = 2.0) -> bool:
        """Whether the gateway says the mesh is SERVING."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self._channel.close()
