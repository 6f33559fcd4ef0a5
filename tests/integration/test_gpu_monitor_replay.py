"""The GPU monitor as a real process, replaying a drill recording."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb
from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, wait_until_serving


def write_recording(path: Path, steps: list[tuple[float, int]]) -> None:
    """Replaces the drill file in one step, so the monitor never reads half of it."""
    lines = "".join(
        json.dumps({"at_seconds": at, "devices": [{"kind": "gpu", "index": 0, "name": "drill",
                    "memory_total_bytes": 100, "memory_used_bytes": used, "temperature_celsius": 50}]}) + "\n"
        for at, used in steps)  # fmt: skip
    next_version = path.with_suffix(".next")
    next_version.write_text(lines)
    next_version.replace(path)


def test_a_replayed_recording_is_what_the_monitor_reports(tmp_path: Path) -> None:
    drill = tmp_path / "drill.jsonl"
    # One step holds for as long as the monitor runs, so the first reading is known whenever it is taken.
    write_recording(drill, [(0, 30)])
    port = free_port()
    args = ["-m", "services.gpu_monitor", "--listen", f"127.0.0.1:{port}", "--plaintext", "--node-name", "drillnode",
            "--source", "replay", "--replay-file", str(drill)]  # fmt: skip
    process = track(ServiceProcess("gpu-monitor-replay", args, tmp_path / "monitor.log"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process, timeout=30)
            stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
            request = pb.WatchReadingsRequest(interval=duration_pb2.Duration(nanos=50_000_000))
            watch = stub.WatchReadings(request, timeout=60)
            first = next(watch)
            # The new recording plays from its own start: 64 for two seconds, then 97 from then on.
            write_recording(drill, [(0, 64), (2.0, 97)])
            used = [first.readings[0].memory_used_bytes]
            for message in watch:
                used.append(message.readings[0].memory_used_bytes)
                if used[-1] == 97:
                    break
            watch.cancel()
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
    # Each step in its turn, none skipped and none come back: 30 until the rewrite, 64, then 97.
    steps_seen = [value for index, value in enumerate(used) if index == 0 or used[index - 1] != value]
    assert steps_seen == [30, 64, 97], used
