"""Assembles GetSchedulerState from the state machine, the endpoint reports and the device readings."""

from __future__ import annotations

from meshserve.gpumonitor.v1 import gpumonitor_pb2
from meshserve.scheduler.v1 import scheduler_pb2 as pb

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.convert import to_endpoint
from orchestrator.scheduler.core.model import DeviceSnapshot, EndpointSnapshot
from orchestrator.scheduler.endpoint_watcher import EndpointHealth, EndpointReport, EndpointWatcher
from orchestrator.scheduler.monitors import MonitorDirectory
from services.shared.device_readings import copy_optional_readings
from services.shared.proto_maps import SLOT_PRIORITY_TO_PROTO

_HEALTH = {
    EndpointHealth.UNKNOWN: pb.ENDPOINT_HEALTH_UNSPECIFIED,
    EndpointHealth.SERVING: pb.ENDPOINT_HEALTH_SERVING,
    EndpointHealth.NOT_SERVING: pb.ENDPOINT_HEALTH_NOT_SERVING,
    EndpointHealth.UNREACHABLE: pb.ENDPOINT_HEALTH_UNREACHABLE,
}
_KINDS = {gpumonitor_pb2.DEVICE_KIND_GPU: pb.DEVICE_KIND_GPU, gpumonitor_pb2.DEVICE_KIND_HOST: pb.DEVICE_KIND_HOST}


class StateReporter:
    def __init__(self, broker: SlotBroker, endpoints: EndpointWatcher, monitors: MonitorDirectory) -> None:
        self._broker = broker
        self._endpoints = endpoints
        self._monitors = monitors

    def report(self) -> pb.GetSchedulerStateResponse:
        snapshot = self._broker.snapshot()
        response = pb.GetSchedulerStateResponse(
            queue=[
                pb.QueueDepth(priority=SLOT_PRIORITY_TO_PROTO[priority], depth=depth)
                for priority, depth in sorted(snapshot.queue_depth_by_priority.items(), reverse=True)
            ]
        )
        for endpoint in snapshot.endpoints:
            response.endpoints.append(self._endpoint_state(endpoint))
        readings = self._monitors.readings()
        for device in snapshot.devices:
            if device.device_id in readings:
                node_name, _, reading = readings[device.device_id]
                response.devices.append(_device_state(device, node_name, reading))
        return response

    def _endpoint_state(self, endpoint: EndpointSnapshot) -> pb.EndpointState:
        report = self._endpoints.reports.get(endpoint.spec.endpoint_id, EndpointReport())
        serving = report.health is EndpointHealth.SERVING
        state = pb.EndpointState(
            endpoint=to_endpoint(endpoint.spec),
            total_slots=endpoint.spec.total_slots,
            used_slots=endpoint.used_slots,
            resident=serving and endpoint.resident,
            circuit_open=endpoint.circuit_open,
            health=_HEALTH[report.health],
            failure_rate=endpoint.failure_rate,
        )
        state.endpoint.device_id = endpoint.device_id
        if endpoint.latency_ema_seconds is not None:
            state.first_token_latency.FromNanoseconds(int(endpoint.latency_ema_seconds * 1e9))
        if report.model_info is not None:
            state.engine = report.model_info.engine
            state.context_length = report.model_info.context_length
            state.memory_footprint_bytes = report.model_info.memory_footprint_bytes
        return state


def _device_state(device: DeviceSnapshot, node_name: str, reading: gpumonitor_pb2.DeviceReading) -> pb.DeviceState:
    state = pb.DeviceState(
        device_id=device.device_id,
        node_name=node_name,
        kind=_KINDS.get(reading.device.kind, pb.DEVICE_KIND_UNSPECIFIED),
        name=reading.device.name,
        capacity_bytes=device.capacity_bytes or 0,
        reserved_bytes=device.reserved_bytes,
        peak_reserved_bytes=device.peak_reserved_bytes,
        measured_used_bytes=device.measured_used_bytes,
        memory_total_bytes=reading.memory_total_bytes,
        # The proto's levels and thermal states are numbered as the core's: LOW is 1, EMERGENCY 5.
        pressure_level=device.level,
        thermal_state=device.thermal,
        silent=device.silent,
    )
    state.read_time.CopyFrom(reading.read_time)
    copy_optional_readings(reading, state)
    return state
