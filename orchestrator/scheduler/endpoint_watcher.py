"""Follows each inference endpoint's health stream, so the scheduler grants only to endpoints that serve.

A dead endpoint breaks its stream at once: it stops getting work within milliseconds, and gets it again
as soon as it reports SERVING after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import EndpointSpec
from services.shared.channels import open_channel
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 0.2


class EndpointHealth(Enum):
    UNKNOWN = "unknown"
    SERVING = "serving"
    NOT_SERVING = "not_serving"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class EndpointReport:
    health: EndpointHealth = EndpointHealth.UNKNOWN
    model_info: inference_pb2.ModelInfo | None = None


class EndpointWatcher:
    def __init__(self, broker: SlotBroker, endpoints: list[EndpointSpec], tls: TlsFiles | None) -> None:
        self._broker = broker
        self._endpoints = endpoints
        self._tls = tls
        self.reports: dict[str, EndpointReport] = {spec.endpoint_id: EndpointReport() for spec in endpoints}

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(spec) for spec in self._endpoints))

    async def _follow(self, spec: EndpointSpec) -> None:
        while True:
            try:
                async with open_channel(spec.address, self._tls) as channel:
                    await self._watch(spec, channel)
            except grpc.aio.AioRpcError as error:
                if self.reports[spec.endpoint_id].health is not EndpointHealth.UNREACHABLE:
                    log.warning("endpoint %s unreachable: %s", spec.endpoint_id, error.code().name)
            self._set(spec, EndpointReport(EndpointHealth.UNREACHABLE))
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _watch(self, spec: EndpointSpec, channel: grpc.aio.Channel) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        async for reply in health.Watch(health_pb2.HealthCheckRequest()):
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                info = await inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
                    inference_pb2.GetModelInfoRequest(), timeout=5
                )
                self._set(spec, EndpointReport(EndpointHealth.SERVING, info.model))
            else:
                self._set(spec, EndpointReport(EndpointHealth.NOT_SERVING))

    def _set(self, spec: EndpointSpec, report: EndpointReport) -> None:
        previous = self.reports[spec.endpoint_id]
        self.reports[spec.endpoint_id] = report
        if previous.health is not report.health:
            log.info("endpoint %s is %s", spec.endpoint_id, report.health.value)
            self._broker.set_available(spec.endpoint_id, report.health is EndpointHealth.SERVING)
