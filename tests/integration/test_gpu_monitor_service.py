"""The GPU monitor as a real process: snapshots, paced watches, refusals, health, mTLS and SIGTERM."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pynvml
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb
from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from services.gpu_monitor.core.host_source import HostMemorySource
from services.shared.certs import ensure_dev_certs
from services.shared.status_details import details_of
from services.shared.tls import TlsFiles, channel_credentials
from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, health_status, wait_until_serving

NODE = "test-node"
SERVICE_NAME = "meshserve.gpumonitor.v1.GpuMonitorService"


def gpu_monitor_args(port: int, *extra: str) -> list[str]:
    return ["-m", "services.gpu_monitor", "--listen", f"127.0.0.1:{port}", "--node-name", NODE, *extra]


def nvml_gpu_count() -> int:
    """How many GPUs NVML reports to this test process; 0 where NVML does not load (no driver)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def start(name: str, args: list[str], directory: Path) -> ServiceProcess:
    return track(ServiceProcess(name, args, directory / f"{name}.log"))


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One monitor with the default source (auto), plaintext on loopback, at a 0.1 s default interval."""
    port = free_port()
    args = gpu_monitor_args(port, "--plaintext", "--interval-seconds", "0.1")
    process = start("gpu-monitor", args, tmp_path_factory.mktemp("gpu-monitor"))
    process.address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(process.address) as channel:
        wait_until_serving(channel, process, timeout=30)
    yield process
    process.terminate()
    untrack(process)


@pytest.fixture()
def stub(monitor: ServiceProcess) -> Iterator[gpumonitor_pb2_grpc.GpuMonitorServiceStub]:
    with grpc.insecure_channel(monitor.address) as channel:
        yield gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)


def assert_host_reading_matches_this_machine(reading: pb.DeviceReading) -> None:
    expected = HostMemorySource(NODE).memory_figures()
    assert reading.device.device_id == f"{NODE}/host"
    assert reading.device.kind == pb.DEVICE_KIND_HOST
    assert reading.memory_total_bytes == expected.total_bytes > 0
    assert 0 < reading.memory_used_bytes <= reading.memory_total_bytes
    assert reading.HasField("read_time")
    for name in ("utilization_percent", "temperature_celsius", "power_watts"):
        assert not reading.HasField(name)


def test_the_snapshot_reports_this_machines_devices(stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub) -> None:
    snapshot = stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    assert snapshot.node_name == NODE
    gpus = nvml_gpu_count()
    if gpus == 0:
        # No NVIDIA driver here: auto falls back to host memory, one device.
        assert snapshot.source == pb.READING_SOURCE_HOST
        (reading,) = snapshot.readings
        assert_host_reading_matches_this_machine(reading)
    else:
        assert snapshot.source == pb.READING_SOURCE_NVML
        assert [reading.device.device_id for reading in snapshot.readings] == [f"{NODE}/gpu{i}" for i in range(gpus)]
        assert all(0 <= reading.memory_used_bytes <= reading.memory_total_bytes for reading in snapshot.readings)
        assert all(reading.memory_total_bytes > 0 for reading in snapshot.readings)


def test_the_log_says_which_source_was_chosen_and_why(monitor: ServiceProcess) -> None:
    expected = "NVML is unavailable" if nvml_gpu_count() == 0 else "NVML initialised"
    assert expected in monitor.logs()


def interval(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def read_times(messages: list[pb.WatchReadingsResponse]) -> list[float]:
    assert all(message.node_name == NODE and message.readings for message in messages)
    return [message.readings[0].read_time.ToNanoseconds() / 1e9 for message in messages]


def watch_beside_a_paced_one(
    stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub, request: pb.WatchReadingsRequest, pace: float, count: int
) -> tuple[list[float], list[float]]:
    """The read times of one watch's messages, sent while a second watch at `pace` sent `count`.

    Both watches are on one monitor, so a busy machine slows them alike: their counts keep the ratio of
    their intervals, however late each reading is.
    """
    watched: list[pb.WatchReadingsResponse] = []
    call = stub.WatchReadings(request, timeout=30)

    def read_all() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled once the paced watch has sent its count
            for message in call:
                watched.append(message)

    reader = threading.Thread(target=read_all)
    reader.start()
    paced_call = stub.WatchReadings(pb.WatchReadingsRequest(interval=interval(pace)), timeout=30)
    paced = [message for _, message in zip(range(count), paced_call, strict=False)]
    paced_call.cancel()
    call.cancel()
    reader.join()
    return read_times(watched), read_times(paced)


def sent_within(times: list[float], window: list[float]) -> int:
    return sum(1 for at in times if window[0] <= at <= window[-1])


def at_most_one_per_interval(times: list[float], window: list[float], seconds: float) -> bool:
    """Readings go on a fixed schedule that may run late, never early; two more allow for a late first one."""
    return sent_within(times, window) <= (window[-1] - window[0]) / seconds + 3


def test_a_watch_streams_at_the_requested_interval(stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub) -> None:
    fast, paced = watch_beside_a_paced_one(stub, pb.WatchReadingsRequest(interval=interval(0.1)), 0.4, 4)
    assert fast == sorted(fast) and len(paced) == 4 and paced == sorted(paced)
    # Never faster than asked: three intervals of 0.4 s, less at most one for a late first reading.
    assert paced[-1] - paced[0] >= 2 * 0.4, paced
    # 1.2 s at 0.1 s is about twelve readings; at the paced watch's interval it would be four, at the
    # 0.05 s floor 24.
    assert sent_within(fast, paced) >= 7 and at_most_one_per_interval(fast, paced, 0.1), (fast, paced)


def test_a_watch_without_an_interval_uses_the_configured_default(
    stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub,
) -> None:
    default, paced = watch_beside_a_paced_one(stub, pb.WatchReadingsRequest(), 1.0, 2)
    # 1 s at the configured 0.1 s is about ten readings: at the built-in default of 1 s it would be two.
    assert sent_within(default, paced) >= 5 and at_most_one_per_interval(default, paced, 0.1), (default, paced)


@pytest.mark.parametrize(
    "interval", [duration_pb2.Duration(seconds=-1), duration_pb2.Duration(seconds=3601)], ids=["negative", "over-1h"]
)
def test_a_bad_interval_is_invalid_argument(
    stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub, interval: duration_pb2.Duration
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        next(stub.WatchReadings(pb.WatchReadingsRequest(interval=interval), timeout=10))
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_INTERVAL"


def test_health_is_serving(monitor: ServiceProcess) -> None:
    with grpc.insecure_channel(monitor.address) as channel:
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert health_status(channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def test_asking_for_nvml_fails_at_start_unless_nvml_reports_a_gpu(tmp_path: Path) -> None:
    port = free_port()
    process = start("gpu-monitor-nvml", gpu_monitor_args(port, "--plaintext", "--source", "nvml"), tmp_path)
    try:
        if nvml_gpu_count() == 0:
            exit_code = process.process.wait(timeout=30)
            assert exit_code == 1
            assert "NVML was asked for but is unavailable" in process.logs()
        else:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                wait_until_serving(channel, process, timeout=30)
                snapshot = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel).GetSnapshot(pb.GetSnapshotRequest())
            assert snapshot.source == pb.READING_SOURCE_NVML
    finally:
        process.terminate()
        untrack(process)


@dataclass
class MtlsMonitor:
    address: str
    certs: dict[str, TlsFiles]
    process: ServiceProcess


@pytest.fixture(scope="module")
def mtls_monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsMonitor]:
    """A monitor over mTLS reading host memory, as the scheduler of a GPU-less node would see it."""
    directory = tmp_path_factory.mktemp("gpu-monitor-mtls")
    certs = ensure_dev_certs(directory / "certs", ["gpu-monitor", "scheduler", "gateway"])
    server = certs["gpu-monitor"]
    port = free_port()
    tls_flags = ("--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(server.ca))
    process = start("gpu-monitor-mtls", gpu_monitor_args(port, "--source", "host", *tls_flags), directory)
    monitor = MtlsMonitor(f"127.0.0.1:{port}", certs, process)
    with grpc.secure_channel(monitor.address, channel_credentials(certs["scheduler"])) as channel:
        wait_until_serving(channel, process, timeout=30)
    yield monitor
    process.terminate()
    untrack(process)


def test_mtls_serves_the_scheduler(mtls_monitor: MtlsMonitor) -> None:
    with grpc.secure_channel(mtls_monitor.address, channel_credentials(mtls_monitor.certs["scheduler"])) as channel:
        snapshot = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel).GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    assert snapshot.source == pb.READING_SOURCE_HOST
    (reading,) = snapshot.readings
    assert_host_reading_matches_this_machine(reading)


def test_mtls_refuses_a_mesh_service_that_is_not_allowed(mtls_monitor: MtlsMonitor) -> None:
    with grpc.secure_channel(mtls_monitor.address, channel_credentials(mtls_monitor.certs["gateway"])) as channel:
        stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetSnapshot(pb.GetSnapshotRequest(), timeout=10)
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "CALLER_NOT_ALLOWED"


def test_mtls_monitor_stops_cleanly(mtls_monitor: MtlsMonitor) -> None:
    assert mtls_monitor.process.terminate() == 0


def test_sigterm_ends_open_watches_and_exits_zero(monitor: ServiceProcess) -> None:
    with grpc.insecure_channel(monitor.address) as channel:
        stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
        # The next reading is a minute away: only the monitor ending its watches lets SIGTERM finish sooner
        # than terminate's 20 s, after which the process would be killed rather than exit 0.
        call = stub.WatchReadings(pb.WatchReadingsRequest(interval=duration_pb2.Duration(seconds=60)), timeout=40)
        next(call)
        exit_code = monitor.terminate(timeout=20)
        with pytest.raises(grpc.RpcError) as ended:
            next(call)
    assert exit_code == 0
    details = details_of(ended.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "SHUTTING_DOWN"
    assert '"message": "stopped"' in monitor.logs()
