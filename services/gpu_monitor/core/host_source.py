"""Host memory as one device of kind HOST, for nodes without a GPU.

A process in a container is bounded by its cgroup's memory limit, not by the machine's RAM, so where a
limit is set and smaller than the host's memory, the limit is the total and the cgroup's own usage is
what is used. Both cgroup v2 (memory.max, memory.current) and v1 (memory/memory.limit_in_bytes,
memory/memory.usage_in_bytes) are read; v2 first.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, SourceKind, utc_now
from services.gpu_monitor.core.sources import SourceReadError, SourceUnavailableError

_BYTES_PER_KIB = 1024
# cgroup v1 says "no limit" with a huge number (the largest page-aligned 64-bit value); anything this
# large is no limit.
_CGROUP_V1_UNLIMITED_FROM = 1 << 62


@dataclass(frozen=True)
class HostMemory:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class CgroupMemory:
    limit_bytes: int
    usage_bytes: int


@dataclass(frozen=True)
class MemoryFigures:
    total_bytes: int
    used_bytes: int
    limited_by_cgroup: bool


class HostMemorySource:
    """Reads /proc/meminfo and the cgroup memory files. The paths can be pointed elsewhere for tests."""

    def __init__(
        self,
        node_name: str,
        meminfo_path: Path = Path("/proc/meminfo"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        clock: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self._node_name = node_name
        self._meminfo_path = meminfo_path
        self._cgroup_root = cgroup_root
        self._clock = clock

    @property
    def kind(self) -> SourceKind:
        return SourceKind.HOST

    def start(self) -> None:
        # A first reading proves the files are there, so a broken node fails at start, not on every call.
        try:
            self.read()
        except SourceReadError as error:
            raise SourceUnavailableError(str(error)) from error

    def read(self) -> tuple[DeviceReading, ...]:
        read_time = self._clock()
        figures = self.memory_figures()
        name = "host memory (cgroup limit)" if figures.limited_by_cgroup else "host memory"
        device = Device(device_id=f"{self._node_name}/host", kind=DeviceKind.HOST, index=0, name=name)
        return (DeviceReading(device, figures.total_bytes, figures.used_bytes, read_time),)

    def close(self) -> None:
        """Nothing to release."""

    def memory_figures(self) -> MemoryFigures:
        try:
            host = read_meminfo(self._meminfo_path)
            cgroup = read_cgroup_memory(self._cgroup_root)
        except (OSError, ValueError) as error:
            raise SourceReadError(f"could not read host memory: {error}") from error
        return combine(host, cgroup)


def combine(host: HostMemory, cgroup: CgroupMemory | None) -> MemoryFigures:
    """The memory this process can use: the host's, or the cgroup's where its limit is smaller."""
    if cgroup is not None and cgroup.limit_bytes < host.total_bytes:
        return MemoryFigures(cgroup.limit_bytes, min(cgroup.usage_bytes, cgroup.limit_bytes), True)
    used = max(host.total_bytes - host.available_bytes, 0)
    return MemoryFigures(host.total_bytes, used, False)


def read_meminfo(path: Path) -> HostMemory:
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[key.strip()] = int(parts[0]) * _BYTES_PER_KIB
    if "MemTotal" not in fields:
        raise ValueError(f"{path} has no MemTotal")
    # Kernels before 3.14 have no MemAvailable; MemFree understates what is available, but never overstates.
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return HostMemory(fields["MemTotal"], available)


def read_cgroup_memory(root: Path) -> CgroupMemory | None:
    """The cgroup's limit and usage, or None where no limit is set (or no cgroup memory files exist)."""
    v2_limit, v2_usage = root / "memory.max", root / "memory.current"
    if v2_limit.exists():
        raw_limit = v2_limit.read_text().strip()
        if raw_limit == "max":
            return None
        return CgroupMemory(int(raw_limit), int(v2_usage.read_text()))
    v1_limit, v1_usage = root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"
    if v1_limit.exists():
        limit = int(v1_limit.read_text())
        if limit >= _CGROUP_V1_UNLIMITED_FROM:
            return None
        return CgroupMemory(limit, int(v1_usage.read_text()))
    return None
