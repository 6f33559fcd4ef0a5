"""A drill source: readings recorded in a file, played back on the clock.

It lets the scheduler's pressure policy be exercised end to end where there is no GPU, or no way to
fill one on purpose. The file holds JSON lines, one step each, in time order:

    {"at_seconds": 0, "devices": [{"kind": "gpu", "index": 0, "name": "drill GPU",
      "memory_total_bytes": 8000000000, "memory_used_bytes": 2000000000, "temperature_celsius": 45}]}

A read returns the latest step whose time has come; after the last step, that step holds.

The file is followed: when it is replaced or rewritten, the new steps play from their own start. An
operator (or a test) steers a drill live by writing the next readings into it. A rewrite that does not
parse is logged and the previous steps go on playing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, SourceKind, utc_now
from services.gpu_monitor.core.sources import SourceUnavailableError

log = logging.getLogger(__name__)

_OPTIONAL = ("utilization_percent", "temperature_celsius", "power_watts")


@dataclass(frozen=True)
class _Step:
    at_seconds: float
    devices: tuple[dict, ...]


class ReplaySource:
    def __init__(self, node_name: str, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._node_name = node_name
        self._path = path
        self._clock = clock
        self._steps: list[_Step] = []
        self._started_at = 0.0
        self._version: tuple[int, int, int] | None = None

    @property
    def kind(self) -> SourceKind:
        return SourceKind.REPLAY

    def start(self) -> None:
        try:
            self._version = _version_of(self._path)
            self._steps = _parse(self._path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SourceUnavailableError(f"cannot replay {self._path}: {error}") from error
        self._started_at = self._clock()

    def read(self) -> tuple[DeviceReading, ...]:
        self._follow()
        elapsed = self._clock() - self._started_at
        step = next(step for step in reversed(self._steps) if step.at_seconds <= elapsed)
        now = utc_now()
        return tuple(self._reading(device, now) for device in step.devices)

    def close(self) -> None:
        self._steps = []

    def _follow(self) -> None:
        try:
            version = _version_of(self._path)
            if version == self._version:
                return
            self._version = version
            steps = _parse(self._path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("keeping the previous drill steps: cannot replay %s: %s", self._path, error)
            return
        log.info("replaying %s again from its start (%d steps)", self._path, len(steps))
        self._steps = steps
        self._started_at = self._clock()

    def _reading(self, device: dict, now) -> DeviceReading:
        kind = DeviceKind(device.get("kind", "gpu"))
        index = int(device.get("index", 0))
        suffix = "host" if kind is DeviceKind.HOST else f"gpu{index}"
        identity = Device(f"{self._node_name}/{suffix}", kind, index, device.get("name", "replayed device"))
        optional = {name: float(device[name]) for name in _OPTIONAL if device.get(name) is not None}
        return DeviceReading(
            identity, int(device["memory_total_bytes"]), int(device["memory_used_bytes"]), now, **optional
        )


def _version_of(path: Path) -> tuple[int, int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _parse(path: Path) -> list[_Step]:
    steps = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        raw = json.loads(line)
        devices = tuple(raw["devices"])
        if not devices or any(d["memory_used_bytes"] > d["memory_total_bytes"] for d in devices):
            raise ValueError(f"line {number}: every step needs devices, each using no more than its total")
        steps.append(_Step(float(raw["at_seconds"]), devices))
    if not steps or steps[0].at_seconds != 0:
        raise ValueError("the first step must be at_seconds 0")
    if any(later.at_seconds < earlier.at_seconds for earlier, later in zip(steps, steps[1:], strict=False)):
        raise ValueError("steps must be in time order")
    return steps
