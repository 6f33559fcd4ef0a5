"""`meshserve status`: what the scheduler sees, read through the edge like any other call."""

from __future__ import annotations

from google.protobuf.json_format import MessageToJson
from meshserve.gateway.v1 import gateway_pb2 as pb

_GIB = 1024**3


def render(state: pb.GetSchedulerStateResponse, as_json: bool) -> str:
    if as_json:
        return MessageToJson(state, preserving_proto_field_name=True)
    lines = ["devices:"]
    for device in state.devices:
        share = device.memory_used_bytes / device.memory_total_bytes if device.memory_total_bytes else 0.0
        level = pb.PressureLevel.Name(device.pressure_level).removeprefix("PRESSURE_LEVEL_")
        temperature = f", {device.temperature_celsius:.0f} °C" if device.HasField("temperature_celsius") else ""
        thermal = pb.ThermalState.Name(device.thermal_state).removeprefix("THERMAL_STATE_")
        throttle = f" ({thermal.lower()})" if device.thermal_state > pb.THERMAL_STATE_NORMAL else ""
        lines.append(
            f"  {device.device_id:<24} {device.name}: {device.memory_used_bytes / _GIB:.1f} of "
            f"{device.memory_total_bytes / _GIB:.1f} GiB used ({share:.0%}), pressure {level}{temperature}{throttle}"
        )
        lines.append(
            f"  {'':<24} ledger: {device.reserved_bytes / _GIB:.2f} of {device.capacity_bytes / _GIB:.2f} GiB "
            f"reserved (peak {device.peak_reserved_bytes / _GIB:.2f})"
        )
    waiting = ", ".join(f"{pb.Priority.Name(q.priority).removeprefix('PRIORITY_')} {q.depth}" for q in state.queue)
    lines.append(f"queue: {waiting}")
    lines.append("endpoints:")
    for endpoint in state.endpoints:
        health = "serving" if endpoint.serving else "not serving"
        residency = "loaded" if endpoint.resident else "unloaded"
        circuit = ", circuit open" if endpoint.circuit_open else ""
        lines.append(
            f"  {endpoint.endpoint_id:<36} slots {endpoint.used_slots}/{endpoint.total_slots} in use, "
            f"{health}, {residency}{circuit}"
        )
    lines.append(f"resident models: {', '.join(state.resident_models) or 'none'}")
    return "\n".join(lines)
