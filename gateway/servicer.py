"""The public API: proto in, gateway core, proto out. Errors are mapped by the interceptor."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from opentelemetry import trace

from gateway.audit import RequestAudit
from gateway.clients import SchedulerClient
from gateway.convert import to_gateway_request, to_public_response
from gateway.core.service import GatewayCore
from gateway.identity import identity_of
from gateway.observability import UNKNOWN_MODEL_LABEL, observed_generation
from gateway.status import gpu_status_response, models_response, scheduler_state_response
from services.shared.mesh_config import MeshConfig
from telemetry.spans import TRACE_ID_HEADER, trace_id_of

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name
_GENERATE = f"/{SERVICE_NAME}/Generate"


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, core: GatewayCore, scheduler: SchedulerClient, mesh: MeshConfig, audit: RequestAudit) -> None:
        self._core = core
        self._scheduler = scheduler
        self._mesh = mesh
        self._audit = audit

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        identity = identity_of(context, _GENERATE)
        with self._audit.call(identity, refusals_only=True):
            command = to_gateway_request(request, identity.subject, uuid.uuid4().hex, identity.limits)
        span = trace.get_current_span()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        stream = self._audit.generation(
            identity,
            command,
            observed_generation(
                span, command, self._model_label(command.model), self._core.generate(command, deadline)
            ),
        )
        first = True
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                if first:
                    # Sent with the first token, not before: a refusal must stay a trailers-only status,
                    # which is what lets the edge answer it with its HTTP code.
                    await context.send_initial_metadata(((TRACE_ID_HEADER, trace_id_of(span)),))
                    first = False
                yield to_public_response(chunk)

    def _model_label(self, requested: str) -> str:
        names = [model.name for model in self._mesh.models]
        model = requested or names[0]
        return model if model in names else UNKNOWN_MODEL_LABEL

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        with self._audit.call(identity_of(context, f"/{SERVICE_NAME}/ListModels")):
            return models_response(self._mesh, await self._scheduler.state())

    async def GetGpuStatus(
        self, request: pb.GetGpuStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetGpuStatusResponse:
        with self._audit.call(identity_of(context, f"/{SERVICE_NAME}/GetGpuStatus")):
            return gpu_status_response(await self._scheduler.state())

    async def GetSchedulerState(
        self, request: pb.GetSchedulerStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSchedulerStateResponse:
        with self._audit.call(identity_of(context, f"/{SERVICE_NAME}/GetSchedulerState")):
            return scheduler_state_response(await self._scheduler.state())
