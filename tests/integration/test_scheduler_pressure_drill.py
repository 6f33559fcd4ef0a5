"""A drill across two real processes: the monitor replays readings, the scheduler follows their pressure."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from meshserve.scheduler.v1 import scheduler_pb2 as pb
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, wait_until_serving, write_drill_reading, write_model_config

TOTAL_BYTES = 1000
# Used share of memory over the drill, and the level the scheduler must report at each.
STEPS = [(0.30, "LOW"), (0.60, "NORMAL"), (0.80, "HIGH"), (0.90, "CRITICAL"), (0.97, "EMERGENCY"),
         (0.93, "EMERGENCY"), (0.40, "LOW")]  # fmt: skip


def write_reading(path: Path, used_share: float) -> None:
    write_drill_reading(path, int(TOTAL_BYTES * used_share), TOTAL_BYTES)


def level_once_measured(stub: scheduler_pb2_grpc.SchedulerServiceStub, used_bytes: int) -> str:
    """The pressure level the scheduler reports once it has taken in a reading of `used_bytes`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        devices = stub.GetSchedulerState(pb.GetSchedulerStateRequest(), timeout=5).devices
        if devices and devices[0].measured_used_bytes == used_bytes:
            return pb.PressureLevel.Name(devices[0].pressure_level).removeprefix("PRESSURE_LEVEL_")
        time.sleep(0.05)
    raise AssertionError(f"the scheduler never took in a reading of {used_bytes} bytes")


def test_the_scheduler_reports_each_pressure_level_as_a_replayed_device_reaches_it(tmp_path: Path) -> None:
    drill = tmp_path / "drill.jsonl"
    write_reading(drill, STEPS[0][0])
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
            # Each reading is written only once the scheduler has taken in the one before, so none is missed.
            for used_share, _ in STEPS:
                write_reading(drill, used_share)
                seen.append(level_once_measured(stub, int(TOTAL_BYTES * used_share)))
    finally:
        for process in (scheduler, monitor):
            process.terminate()
            untrack(process)
    # The emergency holds through 93%, inside the hysteresis margin, and ends only at 40%.
    assert seen == [level for _, level in STEPS]
