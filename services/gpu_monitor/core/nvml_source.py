"""Readings of every NVIDIA GPU on the node, through NVML (the nvidia-ml-py package, imported as pynvml).

pynvml loads the driver's library only in nvmlInit, so importing it is safe on a node without a GPU.
A measurement the GPU does not support (or that fails this time) is left out of the reading rather
than failing it: utilisation, temperature and power are optional in the contract. Memory is the
point of a reading, so a GPU whose memory cannot be read is left out of that round instead.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, SourceKind, utc_now
from services.gpu_monitor.core.sources import SourceReadError, SourceUnavailableError

log = logging.getLogger(__name__)

_MILLIWATTS_PER_WATT = 1000.0
_T = TypeVar("_T")


class NvmlSource:
    """Reads memory, utilisation, temperature and power of each GPU that NVML reports."""

    def __init__(self, node_name: str, clock: Callable[[], datetime.datetime] = utc_now) -> None:
        self._node_name = node_name
        self._clock = clock
        # GPUs whose memory could not be read last time, so a lasting failure is logged once, not every read.
        self._unreadable: set[int] = set()

    @property
    def kind(self) -> SourceKind:
        return SourceKind.NVML

    def start(self) -> None:
        try:
            pynvml.nvmlInit()
        except (pynvml.NVMLError, OSError) as error:
            raise SourceUnavailableError(f"nvmlInit failed: {error}") from error
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as error:
            self.close()
            raise SourceUnavailableError(f"NVML could not count GPUs: {error}") from error
        if count < 1:
            self.close()
            raise SourceUnavailableError("NVML reports no GPU")
        log.info("NVML reports %d GPU(s)", count)

    def read(self) -> tuple[DeviceReading, ...]:
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as error:
            raise SourceReadError(f"NVML could not count GPUs: {error}") from error
        readings = (self._read_gpu(index) for index in range(count))
        return tuple(reading for reading in readings if reading is not None)

    def close(self) -> None:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as error:
            log.warning("nvmlShutdown failed: %s", error)

    def _read_gpu(self, index: int) -> DeviceReading | None:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except pynvml.NVMLError as error:
            self._note_unreadable(index, error)
            return None
        self._note_readable(index)
        read_time = self._clock()
        return DeviceReading(
            device=self._describe(index, handle),
            memory_total_bytes=int(memory.total),
            memory_used_bytes=int(memory.used),
            read_time=read_time,
            utilization_percent=_optional(lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
            temperature_celsius=_optional(
                lambda: float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            ),
            power_watts=_optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / _MILLIWATTS_PER_WATT),
        )

    def _describe(self, index: int, handle: Any) -> Device:
        return Device(
            device_id=f"{self._node_name}/gpu{index}",
            kind=DeviceKind.GPU,
            index=index,
            name=_text(_optional(lambda: pynvml.nvmlDeviceGetName(handle))),
            uuid=_text(_optional(lambda: pynvml.nvmlDeviceGetUUID(handle))),
        )

    def _note_unreadable(self, index: int, error: Exception) -> None:
        if index not in self._unreadable:
            self._unreadable.add(index)
            log.warning("GPU %d left out of readings: its memory cannot be read (%s)", index, error)

    def _note_readable(self, index: int) -> None:
        if index in self._unreadable:
            self._unreadable.discard(index)
            log.info("GPU %d is readable again", index)


def _optional(measure: Callable[[], _T]) -> _T | None:
    """The measurement, or None where NVML does not support it or it failed this time."""
    try:
        return measure()
    except pynvml.NVMLError:
        return None


def _text(value: str | bytes | None) -> str:
    # Older nvidia-ml-py releases return bytes for names and UUIDs.
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""
