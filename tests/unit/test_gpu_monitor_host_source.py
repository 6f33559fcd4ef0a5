"""Host memory from fake /proc/meminfo and cgroup files: the cgroup limit wins only where it is smaller."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from services.gpu_monitor.core.host_source import HostMemorySource
from services.gpu_monitor.core.readings import DeviceKind, SourceKind
from services.gpu_monitor.core.sources import SourceReadError, SourceUnavailableError

GIB = 1024**3
HOST_TOTAL = 16 * GIB
HOST_AVAILABLE = 10 * GIB
CGROUP_V1_UNLIMITED = "9223372036854771712"
FIXED_TIME = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def write_meminfo(directory: Path, total: int = HOST_TOTAL, available: int | None = HOST_AVAILABLE) -> Path:
    lines = [f"MemTotal:       {total // 1024} kB", f"MemFree:        {1 * GIB // 1024} kB"]
    if available is not None:
        lines.append(f"MemAvailable:   {available // 1024} kB")
    lines.append("HugePages_Total:       0")
    path = directory / "meminfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_cgroup_v2(directory: Path, limit: str, current: int) -> Path:
    root = directory / "cgroup"
    root.mkdir()
    (root / "memory.max").write_text(limit + "\n")
    (root / "memory.current").write_text(f"{current}\n")
    return root


def write_cgroup_v1(directory: Path, limit: str, usage: int) -> Path:
    root = directory / "cgroup"
    (root / "memory").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text(limit + "\n")
    (root / "memory" / "memory.usage_in_bytes").write_text(f"{usage}\n")
    return root


def source(meminfo: Path, cgroup_root: Path) -> HostMemorySource:
    return HostMemorySource("node-a", meminfo_path=meminfo, cgroup_root=cgroup_root, clock=lambda: FIXED_TIME)


def test_without_cgroup_files_the_host_memory_is_reported(tmp_path: Path) -> None:
    (reading,) = source(write_meminfo(tmp_path), tmp_path / "no-cgroup").read()
    assert reading.memory_total_bytes == HOST_TOTAL
    assert reading.memory_used_bytes == HOST_TOTAL - HOST_AVAILABLE
    assert reading.device.device_id == "node-a/host"
    assert reading.device.kind is DeviceKind.HOST
    assert reading.device.name == "host memory"
    assert reading.read_time == FIXED_TIME
    assert (reading.utilization_percent, reading.temperature_celsius, reading.power_watts) == (None, None, None)


def test_a_smaller_cgroup_v2_limit_is_the_total_and_its_usage_is_used(tmp_path: Path) -> None:
    cgroup = write_cgroup_v2(tmp_path, str(4 * GIB), current=3 * GIB)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_total_bytes == 4 * GIB
    assert reading.memory_used_bytes == 3 * GIB
    assert reading.device.name == "host memory (cgroup limit)"


def test_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    cgroup = write_cgroup_v2(tmp_path, "max", current=3 * GIB)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_total_bytes == HOST_TOTAL
    assert reading.memory_used_bytes == HOST_TOTAL - HOST_AVAILABLE


def test_a_cgroup_limit_larger_than_the_host_is_not_binding(tmp_path: Path) -> None:
    cgroup = write_cgroup_v2(tmp_path, str(64 * GIB), current=1 * GIB)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_total_bytes == HOST_TOTAL
    assert reading.memory_used_bytes == HOST_TOTAL - HOST_AVAILABLE


def test_a_smaller_cgroup_v1_limit_is_the_total_and_its_usage_is_used(tmp_path: Path) -> None:
    cgroup = write_cgroup_v1(tmp_path, str(2 * GIB), usage=512 * 1024**2)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_total_bytes == 2 * GIB
    assert reading.memory_used_bytes == 512 * 1024**2


def test_cgroup_v1_huge_limit_means_no_limit(tmp_path: Path) -> None:
    cgroup = write_cgroup_v1(tmp_path, CGROUP_V1_UNLIMITED, usage=1 * GIB)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_total_bytes == HOST_TOTAL
    assert reading.memory_used_bytes == HOST_TOTAL - HOST_AVAILABLE


def test_usage_above_the_limit_is_reported_as_the_limit(tmp_path: Path) -> None:
    # memory.current can briefly exceed memory.max while the kernel reclaims; used never exceeds total.
    cgroup = write_cgroup_v2(tmp_path, str(4 * GIB), current=4 * GIB + 4096)
    (reading,) = source(write_meminfo(tmp_path), cgroup).read()
    assert reading.memory_used_bytes == reading.memory_total_bytes == 4 * GIB


def test_without_mem_available_mem_free_is_used(tmp_path: Path) -> None:
    (reading,) = source(write_meminfo(tmp_path, available=None), tmp_path / "no-cgroup").read()
    assert reading.memory_used_bytes == HOST_TOTAL - 1 * GIB


def test_unreadable_files_are_a_read_error_and_stop_the_start(tmp_path: Path) -> None:
    broken = source(tmp_path / "missing-meminfo", tmp_path / "no-cgroup")
    with pytest.raises(SourceReadError, match="missing-meminfo"):
        broken.read()
    with pytest.raises(SourceUnavailableError):
        broken.start()


def test_the_real_host_is_readable() -> None:
    host = HostMemorySource("here")
    host.start()
    (reading,) = host.read()
    assert host.kind is SourceKind.HOST
    assert 0 < reading.memory_used_bytes <= reading.memory_total_bytes
