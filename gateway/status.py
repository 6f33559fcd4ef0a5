"""ListModels and GetGpuStatus, assembled from the scheduler's state and the configured models."""

from __future__ import annotations

from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2 as spb

from services.shared.device_readings import copy_optional_readings
from services.shared.mesh_config import MeshConfig

_DEVICE_KINDS = {spb.DEVICE_KIND_GPU: pb.DEVICE_KIND_GPU, spb.DEVICE_KIND_HOST: pb.DEVICE_KIND_HOST}


def models_response(mesh: MeshConfig, state: spb.GetSchedulerStateResponse) -> pb.ListModelsResponse:
    response = pb.ListModelsResponse()
    for config in mesh.models:
        endpoints = [endpoint for endpoint in state.endpoints if endpoint.endpoint.model == config.name]
        model = response.models.add(
            name=config.name,
            engine=config.engine,
            state=_model_state(endpoints),
            context_length=config.context_length,
            total_slots=sum(endpoint.total_slots for endpoint in endpoints),
            free_slots=sum(e.total_slots - e.used_slots for e in endpoints if e.health == spb.ENDPOINT_HEALTH_SERVING),
        )
        model.memory_footprint_bytes = max((e.memory_footprint_bytes for e in endpoints), default=0)
    return response


def _model_state(endpoints: list[spb.EndpointState]) -> int:
    health = {endpoint.health for endpoint in endpoints}
    if spb.ENDPOINT_HEALTH_SERVING in health:
        # Serving but idle past its keep-alive: the next request loads it again.
        return pb.MODEL_STATE_READY if any(e.resident for e in endpoints) else pb.MODEL_STATE_UNLOADED
    if spb.ENDPOINT_HEALTH_NOT_SERVING in health:
        return pb.MODEL_STATE_LOADING
    if not endpoints:
        return pb.MODEL_STATE_UNLOADED
    return pb.MODEL_STATE_UNAVAILABLE


def gpu_status_response(state: spb.GetSchedulerStateResponse) -> pb.GetGpuStatusResponse:
    return pb.GetGpuStatusResponse(devices=[_public_device(device) for device in state.devices])


def scheduler_state_response(state: spb.GetSchedulerStateResponse) -> pb.GetSchedulerStateResponse:
    response = pb.GetSchedulerStateResponse(devices=[_public_device(device) for device in state.devices])
    for queue in state.queue:
        response.queue.add(priority=queue.priority, depth=queue.depth)
    for endpoint in state.endpoints:
        response.endpoints.add(
            endpoint_id=endpoint.endpoint.endpoint_id,
            model=endpoint.endpoint.model,
            address=endpoint.endpoint.address,
            total_slots=endpoint.total_slots,
            used_slots=endpoint.used_slots,
            serving=endpoint.health == spb.ENDPOINT_HEALTH_SERVING,
            resident=endpoint.resident,
            circuit_open=endpoint.circuit_open,
            device_id=endpoint.endpoint.device_id,
        )
    resident = {e.endpoint.model for e in state.endpoints if e.resident}
    response.resident_models.extend(sorted(resident))
    return response


def _public_device(device: spb.DeviceState) -> pb.Device:
    public = pb.Device(
        device_id=device.device_id,
        node_name=device.node_name,
        kind=_DEVICE_KINDS.get(device.kind, pb.DEVICE_KIND_UNSPECIFIED),
        name=device.name,
        memory_total_bytes=device.memory_total_bytes,
        memory_used_bytes=device.measured_used_bytes,
        pressure_level=device.pressure_level,
        capacity_bytes=device.capacity_bytes,
        reserved_bytes=device.reserved_bytes,
        peak_reserved_bytes=device.peak_reserved_bytes,
        thermal_state=device.thermal_state,
    )
    public.read_time.CopyFrom(device.read_time)
    copy_optional_readings(device, public)
    return public


def mesh_is_ready(state: spb.GetSchedulerStateResponse, expect_devices: bool, models: list[str]) -> bool:
    """Every model has an endpoint that serves, and a monitor has reported, where one is configured.

    One endpoint per model is enough: a replica that joins, loading, or one that leaves must not take the
    whole mesh out of its balancer while the model's other replicas serve.
    """
    serving = {e.endpoint.model for e in state.endpoints if e.health == spb.ENDPOINT_HEALTH_SERVING}
    return bool(models) and set(models) <= serving and (bool(state.devices) or not expect_devices)
