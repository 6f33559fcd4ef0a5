"""The NVML source against a fake pynvml: two GPUs, with measurements that fail left out, never raised."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml
import pytest

from services.gpu_monitor.core.nvml_source import NvmlSource
from services.gpu_monitor.core.readings import DeviceKind, SourceKind
from services.gpu_monitor.core.sources import SourceReadError, SourceUnavailableError

GIB = 1024**3
FIXED_TIME = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@dataclass
class FakeGpu:
    name: str
    uuid: str
    total: int
    used: int
    utilization: int = 40
    temperature: int = 55
    power_milliwatts: int = 123_500
    # Names of the pynvml functions that raise NVMLError for this GPU.
    failing: set[str] = field(default_factory=set)


@dataclass
class FakeNvml:
    gpus: list[FakeGpu]
    init_error: int | None = None
    count_error: int | None = None
    shutdowns: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pynvml, "nvmlInit", self.init)
        monkeypatch.setattr(pynvml, "nvmlShutdown", self.shutdown)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", self.count)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", self.handle)
        for function, measure in {
            "nvmlDeviceGetName": lambda gpu: gpu.name,
            "nvmlDeviceGetUUID": lambda gpu: gpu.uuid,
            "nvmlDeviceGetMemoryInfo": lambda gpu: SimpleNamespace(total=gpu.total, used=gpu.used, free=0),
            "nvmlDeviceGetUtilizationRates": lambda gpu: SimpleNamespace(gpu=gpu.utilization, memory=0),
            "nvmlDeviceGetPowerUsage": lambda gpu: gpu.power_milliwatts,
        }.items():
            monkeypatch.setattr(pynvml, function, self._measured(function, measure))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", self.temperature)

    def init(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def count(self) -> int:
        if self.count_error is not None:
            raise pynvml.NVMLError(self.count_error)
        return len(self.gpus)

    def handle(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def temperature(self, gpu: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._fail_if_asked(gpu, "nvmlDeviceGetTemperature")
        return gpu.temperature

    def _measured(self, function: str, measure: Callable[[FakeGpu], object]) -> Callable[[FakeGpu], object]:
        def call(gpu: FakeGpu) -> object:
            self._fail_if_asked(gpu, function)
            return measure(gpu)

        return call

    @staticmethod
    def _fail_if_asked(gpu: FakeGpu, function: str) -> None:
        if function in gpu.failing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu("NVIDIA H100", "GPU-aaaa", total=80 * GIB, used=10 * GIB),
        FakeGpu(
            "NVIDIA L4",
            "GPU-bbbb",
            total=24 * GIB,
            used=2 * GIB,
            failing={"nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage"},
        ),
    ]


def started(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> NvmlSource:
    fake.install(monkeypatch)
    source = NvmlSource("node-g", clock=lambda: FIXED_TIME)
    source.start()
    return source


def test_each_gpu_is_read_with_all_its_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    source = started(FakeNvml(two_gpus()), monkeypatch)
    first, second = source.read()
    assert source.kind is SourceKind.NVML
    assert first.device.device_id == "node-g/gpu0"
    assert (first.device.kind, first.device.index) == (DeviceKind.GPU, 0)
    assert (first.device.name, first.device.uuid) == ("NVIDIA H100", "GPU-aaaa")
    assert (first.memory_total_bytes, first.memory_used_bytes) == (80 * GIB, 10 * GIB)
    assert first.utilization_percent == 40.0
    assert first.temperature_celsius == 55.0
    assert first.power_watts == pytest.approx(123.5)
    assert first.read_time == FIXED_TIME
    assert second.device.device_id == "node-g/gpu1"


def test_a_measurement_that_raises_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    _, second = started(FakeNvml(two_gpus()), monkeypatch).read()
    assert second.temperature_celsius is None
    assert second.power_watts is None
    assert second.utilization_percent == 40.0
    assert (second.memory_total_bytes, second.memory_used_bytes) == (24 * GIB, 2 * GIB)


def test_a_gpu_whose_name_and_uuid_fail_keeps_its_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[0].failing = {"nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetUtilizationRates"}
    first, _ = started(FakeNvml(gpus), monkeypatch).read()
    assert (first.device.name, first.device.uuid, first.utilization_percent) == ("", "", None)
    assert first.memory_total_bytes == 80 * GIB


def test_a_gpu_whose_memory_cannot_be_read_is_left_out_of_the_round(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = two_gpus()
    gpus[0].failing = {"nvmlDeviceGetMemoryInfo"}
    source = started(FakeNvml(gpus), monkeypatch)
    assert [reading.device.index for reading in source.read()] == [1]
    gpus[0].failing = set()
    assert [reading.device.index for reading in source.read()] == [0, 1]


def test_nvml_init_failing_makes_the_source_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus(), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    fake.install(monkeypatch)
    with pytest.raises(SourceUnavailableError, match="nvmlInit failed"):
        NvmlSource("node-g").start()


def test_no_gpu_makes_the_source_unavailable_and_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([])
    fake.install(monkeypatch)
    with pytest.raises(SourceUnavailableError, match="no GPU"):
        NvmlSource("node-g").start()
    assert fake.shutdowns == 1


def test_failing_to_count_gpus_is_a_read_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus())
    source = started(fake, monkeypatch)
    fake.count_error = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(SourceReadError, match="could not count"):
        source.read()


def test_close_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(two_gpus())
    started(fake, monkeypatch).close()
    assert fake.shutdowns == 1
