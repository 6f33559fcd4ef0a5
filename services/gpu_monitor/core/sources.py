"""The DeviceReadingSource protocol, and the choice of source a monitor starts with.

The monitor core depends only on this protocol, so NVML, host memory, or a replay of recorded readings
for drills can stand behind it. Sources are blocking: the core calls them from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from services.gpu_monitor.core.readings import DeviceReading, SourceKind


class SourceUnavailableError(Exception):
    """A source cannot start on this node (for NVML: no driver, or no GPU)."""


class SourceReadError(Exception):
    """A started source could not take a reading this time; the next attempt may succeed."""


@runtime_checkable
class DeviceReadingSource(Protocol):
    @property
    def kind(self) -> SourceKind:
        """Which source this is, as reported to callers."""
        ...

    def start(self) -> None:
        """Initialises the source. Blocking. Raises SourceUnavailableError when it cannot work here."""
        ...

    def read(self) -> tuple[DeviceReading, ...]:
        """Reads every device now. Blocking. Raises SourceReadError when no reading can be taken."""
        ...

    def close(self) -> None:
        """Releases the source. Called once, after the server has stopped taking requests."""
        ...


class SourceMode(Enum):
    """The source an operator asks for: AUTO prefers NVML and falls back to host memory."""

    AUTO = "auto"
    NVML = "nvml"
    HOST = "host"
    # Recorded readings played back from a file: a drill source, never picked by AUTO.
    REPLAY = "replay"


@dataclass(frozen=True)
class SelectedSource:
    """A started source, and why it was chosen (for the log)."""

    source: DeviceReadingSource
    reason: str


def select_source(
    mode: SourceMode,
    make_nvml: Callable[[], DeviceReadingSource],
    make_host: Callable[[], DeviceReadingSource],
    make_replay: Callable[[], DeviceReadingSource] | None = None,
) -> SelectedSource:
    """Starts the source the mode asks for. Blocking. Raises SourceUnavailableError for NVML and REPLAY."""
    if mode is SourceMode.REPLAY:
        if make_replay is None:
            raise SourceUnavailableError("replay was asked for without a file to replay")
        return _started(make_replay(), "a drill: replaying recorded readings")
    if mode is SourceMode.HOST:
        return _started(make_host(), "host memory was asked for")
    nvml = make_nvml()
    try:
        nvml.start()
    except SourceUnavailableError as error:
        if mode is SourceMode.NVML:
            raise SourceUnavailableError(f"NVML was asked for but is unavailable: {error}") from error
        return _started(make_host(), f"NVML is unavailable ({error}), so host memory is reported instead")
    if mode is SourceMode.NVML:
        return SelectedSource(nvml, "NVML was asked for")
    return SelectedSource(nvml, "NVML initialised and reports at least one GPU")


def _started(source: DeviceReadingSource, reason: str) -> SelectedSource:
    source.start()
    return SelectedSource(source, reason)
