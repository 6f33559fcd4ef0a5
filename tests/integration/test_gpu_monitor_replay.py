"""The GPU monitor as a real process, replaying a drill recording."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb
from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, wait_until_serving


def test_a_replayed_recording_is_what_the_monitor_reports(tmp_path: Path) -> None:
    drill = tmp_path / "drill.jsonl"
    steps = [(0, 30), (1.0, 97)]
    drill.write_text("".join(
        json.dumps({"at_seconds": at, "devices": [{"kind": "gpu", "index": 0, "name": "drill",
                    "memory_total_bytes": 100, "memory_used_bytes": used, "temperature_celsius": 50}]}) + "\n"
        for at, used in steps))  # fmt: skip
    port = free_port()
    args = ["-m", "services.gpu_monitor", "--listen", f"127.0.0.1:{port}", "--plaintext", "--node-name", "drillnode",
            "--source", "replay", "--replay-file", str(drill)]  # fmt: skip
    process = track(ServiceProcess("gpu-monitor-replay", args, tmp_path / "monitor.log"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process, timeout=30)
            stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
            first = stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=5)
            time.sleep(1.2)
            later = stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=5)
    finally:
        assert process.terminate() == 0
        untrack(process)
    assert first.source == pb.READING_SOURCE_REPLAY
    (reading,) = first.readings
    assert (reading.device.device_id, reading.memory_used_bytes, reading.temperature_celsius) == (
        "drillnode/gpu0",
        30,
        50,
    )
    assert later.readings[0].memory_used_bytes == 97
