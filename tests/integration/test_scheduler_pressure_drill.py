"""A drill across two real processes: the monitor replays a recording, the scheduler follows its pressure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, wait_until_serving, write_model_config

# Used share of memory over the drill, and the levels the scheduler must report, in order.
STEPS = [(0.0, 0.30), (1.5, 0.60), (3.0, 0.80), (4.5, 0.90), (6.0, 0.97), (7.5, 0.93), (9.0, 0.40)]
EXPECTED = ["LOW", "NORMAL", "HIGH", "CRITICAL", "EMERGENCY", "LOW"]


def test_the_scheduler_reports_each_pressure_level_as_a_replayed_device_reaches_it(tmp_path: Path) -> None:
    drill = tmp_path / "drill.jsonl"
    drill.write_text("".join(
        json.dumps({"at_seconds": at, "devices": [{"kind": "gpu", "index": 0, "name": "drill",
                    "memory_total_bytes": 1000, "memory_used_bytes": int(1000 * used)}]}) + "\n"
        for at, used in STEPS))  # fmt: skip
    monitor_port, scheduler_port = free_port(), free_port()
    monitor = track(ServiceProcess("gpu-monitor", ["-m", "services.gpu_monitor", "--plaintext", "--node-name", "d",
        "--listen", f"127.0.0.1:{monitor_port}", "--source", "replay", "--replay-file", str(drill),
        "--interval-seconds", "0.1"], tmp_path / "monitor.log"))  # fmt: skip
    scheduler = track(ServiceProcess("scheduler", ["-m", "orchestrator.scheduler", "--plaintext",
        "--config", str(write_model_config(tmp_path)), "--listen", f"127.0.0.1:{scheduler_port}",
        "--monitor", f"127.0.0.1:{monitor_port}"], tmp_path / "scheduler.log"))  # fmt: skip
    seen: list[str] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{scheduler_port}") as channel:
            wait_until_serving(channel, scheduler, timeout=30)
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(seen) < len(EXPECTED):
                devices = stub.GetSchedulerState(pb.GetSchedulerStateRequest(), timeout=5).devices
                if devices:
                    level = pb.PressureLevel.Name(devices[0].pressure_level).removeprefix("PRESSURE_LEVEL_")
                    if not seen or seen[-1] != level:
                        seen.append(level)
                time.sleep(0.05)
    finally:
        for process in (scheduler, monitor):
            process.terminate()
            untrack(process)
    # The emergency holds through 93%, inside the hysteresis margin, and ends only at 40%.
    assert seen == EXPECTED
