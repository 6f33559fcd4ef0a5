"""Assembles GetSchedulerState from the state machine, the endpoint reports and the device readings."""

from __future__ import annotations

from meshserve.gpumonitor.v1 import gpumonitor_pb2
from meshserve.scheduler.v1 import scheduler_pb2 as pb

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.convert import PRIORITY_TO_PROTO, to_endpoint
from orchestrator.scheduler.device_watcher import DeviceWatcher
from orchestrator.scheduler.endpoint_watcher import EndpointHealth, EndpointWatcher
from services.shared.device_readings import copy_optional_readings

_HEALTH = {
    EndpointHealth.UNKNOWN: pb.ENDPOINT_HEALTH_UNSPECIFIED,
    EndpointHealth.SERVING: pb.ENDPOINT_HEALTH_SERVING,
    EndpointHealth.NOT_SERVING: pb.ENDPOINT_HEALTH_NOT_SERVING,
    EndpointHealth.UNREACHABLE: pb.ENDPOINT_HEALTH_UNREACHABLE,
}
_KINDS = {gpumonitor_pb2.DEVICE_KIND_GPU: pb.DEVICE_KIND_GPU, gpumonitor_pb2.DEVICE_KIND_HOST: pb.DEVICE_KIND_HOST}


class StateReporter:
    def __init__(self, broker: SlotBroker, endpoints: EndpointWatcher, devices: DeviceWatcher | None) -> None:
        self._broker = broker
        self._endpoints = endpoints
        self._devices = devices

    def report(self) -> pb.GetSchedulerStateResponse:
        snapshot = self._broker.core.snapshot()
        response = pb.GetSchedulerStateResponse(
            queue=[
                pb.QueueDepth(priority=PRIORITY_TO_PROTO[priority], depth=depth)
                for priority, depth in sorted(snapshot.queue_depth_by_priority.items(), reverse=True)
            ]
        )
        for endpoint in snapshot.endpoints:
            report = self._endpoints.reports[endpoint.spec.endpoint_id]
            state = response.endpoints.add(
                endpoint=to_endpoint(endpoint.spec),
                total_slots=endpoint.spec.total_slots,
                used_slots=endpoint.used_slots,
                resident=report.health is EndpointHealth.SERVING,
                health=_HEALTH[report.health],
            )
            if report.model_info is not None:
                state.engine = report.model_info.engine
                state.context_length = report.model_info.context_length
                state.memory_footprint_bytes = report.model_info.memory_footprint_bytes
        if self._devices is not None:
            for device_id, reading in self._devices.readings.items():
                state = _device_state(self._devices.node_name, reading)
                if device_id in self._devices.levels:
                    # The proto's levels are numbered as the core's: LOW is 1, EMERGENCY 5.
                    state.pressure_level = int(self._devices.levels[device_id])
                response.devices.append(state)
        return response


def _device_state(node_name: str, reading: gpumonitor_pb2.DeviceReading) -> pb.DeviceState:
    state = pb.DeviceState(
        device_id=reading.device.device_id,
        node_name=node_name,
        kind=_KINDS.get(reading.device.kind, pb.DEVICE_KIND_UNSPECIFIED),
        name=reading.device.name,
        capacity_bytes=reading.memory_total_bytes,
        memory_total_bytes=reading.memory_total_bytes,
        measured_used_bytes=reading.memory_used_bytes,
    )
    state.read_time.CopyFrom(reading.read_time)
    copy_optional_readings(reading, state)
    return state
