"""Follows each inference endpoint's health stream, so the scheduler grants only to endpoints that serve.

A dead endpoint breaks its stream at once: it stops getting work within milliseconds, and gets it again
as soon as it reports SERVING after a restart. Endpoints are followed from when they are given (by flag)
or register, until they leave.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from enum import Enum

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.ledger import KvShape
from orchestrator.scheduler.core.model import EndpointSpec, Footprint
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
    def __init__(self, broker: SlotBroker, tls: TlsFiles | None) -> None:
        self._broker = broker
        self._tls = tls
        self._specs: dict[str, EndpointSpec] = {}
        self._following: dict[str, asyncio.Task[None]] = {}
        self.reports: dict[str, EndpointReport] = {}

    def follow(self, spec: EndpointSpec) -> None:
        self.unfollow(spec.endpoint_id)
        self._specs[spec.endpoint_id] = spec
        self.reports[spec.endpoint_id] = EndpointReport()
        # A context of its own: it outlives the registration call it starts in, whose trace is not its own.
        following = asyncio.get_running_loop().create_task(self._follow(spec), context=contextvars.Context())
        self._following[spec.endpoint_id] = following

    def unfollow(self, endpoint_id: str) -> None:
        task = self._following.pop(endpoint_id, None)
        if task is not None:
            task.cancel()
        self._specs.pop(endpoint_id, None)
        self.reports.pop(endpoint_id, None)

    def address_of(self, endpoint_id: str) -> str | None:
        spec = self._specs.get(endpoint_id)
        return spec.address if spec is not None else None

    def stop(self) -> None:
        for endpoint_id in list(self._following):
            self.unfollow(endpoint_id)

    async def _follow(self, spec: EndpointSpec) -> None:
        while True:
            try:
                async with open_channel(spec.address, self._tls, peer="inference") as channel:
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
            serving = report.health is EndpointHealth.SERVING
            self._broker.endpoint_serving(spec.endpoint_id, serving)
        if report.model_info is not None:
            info = report.model_info
            footprint = footprint_of(info)
            resident = info.state != inference_pb2.MODEL_STATE_UNLOADED
            self._broker.endpoint_described(spec.endpoint_id, footprint, resident)


def footprint_of(info: inference_pb2.ModelInfo) -> Footprint:
    """The ledger's view of a model: what stays while it is loaded, and what each running request adds.

    An engine that allocates every slot's KV cache up front (llama.cpp) reports it inside its footprint;
    it is split out here so that a running request reserves its share and an idle model does not. An
    engine that reports no KV cost gets one estimated from its model's shape over the whole context.
    """
    shape = KvShape(info.layer_count, info.kv_head_count, info.head_dim, info.kv_cache_element_bytes or 2)
    kv_per_slot = info.kv_cache_bytes_per_slot or shape.bytes_for(info.context_length)
    weights = max(info.memory_footprint_bytes - info.total_slots * kv_per_slot, info.weights_bytes)
    return Footprint(weights, kv_per_slot)
