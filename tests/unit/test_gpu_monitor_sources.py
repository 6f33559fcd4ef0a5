"""Choosing the source: auto prefers NVML and falls back to host memory; nvml refuses to fall back."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from services.gpu_monitor.core.host_source import HostMemorySource
from services.gpu_monitor.core.nvml_source import NvmlSource
from services.gpu_monitor.core.readings import DeviceReading, SourceKind
from services.gpu_monitor.core.sources import (
    DeviceReadingSource,
    SourceMode,
    SourceUnavailableError,
    select_source,
)


class StubSource:
    """A source that starts, or refuses to start, as told; it records whether it was started."""

    def __init__(self, kind: SourceKind, refusal: str | None = None) -> None:
        self._kind = kind
        self._refusal = refusal
        self.started = False

    @property
    def kind(self) -> SourceKind:
        return self._kind

    def start(self) -> None:
        if self._refusal is not None:
            raise SourceUnavailableError(self._refusal)
        self.started = True

    def read(self) -> tuple[DeviceReading, ...]:
        return ()

    def close(self) -> None:
        pass


def test_the_real_sources_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(NvmlSource("n"), DeviceReadingSource)
    assert isinstance(HostMemorySource("n", meminfo_path=tmp_path / "meminfo"), DeviceReadingSource)


def test_auto_uses_nvml_when_it_starts() -> None:
    nvml, host = StubSource(SourceKind.NVML), StubSource(SourceKind.HOST)
    selected = select_source(SourceMode.AUTO, lambda: nvml, lambda: host)
    assert selected.source is nvml
    assert nvml.started and not host.started
    assert "NVML initialised" in selected.reason


def test_auto_falls_back_to_host_and_says_why() -> None:
    nvml, host = StubSource(SourceKind.NVML, refusal="NVML reports no GPU"), StubSource(SourceKind.HOST)
    selected = select_source(SourceMode.AUTO, lambda: nvml, lambda: host)
    assert selected.source is host
    assert host.started
    assert "NVML reports no GPU" in selected.reason


def test_auto_falls_back_to_host_when_nvml_init_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    selected = select_source(SourceMode.AUTO, lambda: NvmlSource("n"), lambda: HostMemorySource("n"))
    assert selected.source.kind is SourceKind.HOST
    assert "Driver Not Loaded" in selected.reason
    (reading,) = selected.source.read()
    assert reading.device.device_id == "n/host"


def test_nvml_mode_fails_clearly_when_nvml_is_unavailable() -> None:
    nvml, host = StubSource(SourceKind.NVML, refusal="nvmlInit failed: no driver"), StubSource(SourceKind.HOST)
    with pytest.raises(SourceUnavailableError, match="NVML was asked for but is unavailable: nvmlInit failed"):
        select_source(SourceMode.NVML, lambda: nvml, lambda: host)
    assert not host.started


def test_host_mode_never_touches_nvml() -> None:
    def no_nvml() -> DeviceReadingSource:
        raise AssertionError("NVML must not be tried when host memory is asked for")

    host = StubSource(SourceKind.HOST)
    selected = select_source(SourceMode.HOST, no_nvml, lambda: host)
    assert selected.source is host and host.started
