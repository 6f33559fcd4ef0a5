import json
from pathlib import Path

import pytest

from services.gpu_monitor.core.readings import DeviceKind, SourceKind
from services.gpu_monitor.core.replay_source import ReplaySource
from services.gpu_monitor.core.sources import SourceMode, SourceUnavailableError, select_source
from tests.support import REPO_ROOT


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def write(tmp_path: Path, steps: list[dict]) -> Path:
    path = tmp_path / "drill.jsonl"
    path.write_text("\n".join(json.dumps(step) for step in steps) + "\n")
    return path


def step(at: float, used: int, total: int = 100, **extra: object) -> dict:
    return {"at_seconds": at, "devices": [{"memory_total_bytes": total, "memory_used_bytes": used, **extra}]}


def test_readings_follow_the_recording_and_hold_its_last_step(tmp_path: Path) -> None:
    clock = Clock()
    source = ReplaySource(
        "node", write(tmp_path, [step(0, 10), step(5, 60, temperature_celsius=70), step(9, 90)]), clock
    )
    source.start()
    seen = []
    for elapsed in (0, 4.9, 5, 8.9, 9, 100):
        clock.now = 50.0 + elapsed
        (reading,) = source.read()
        seen.append(reading.memory_used_bytes)
    assert seen == [10, 10, 60, 60, 90, 90]
    assert reading.device.device_id == "node/gpu0" and reading.device.kind is DeviceKind.GPU
    assert source.kind is SourceKind.REPLAY


def test_optional_measurements_and_host_devices_replay_as_recorded(tmp_path: Path) -> None:
    source = ReplaySource("n", write(tmp_path, [step(0, 1, kind="host", temperature_celsius=40)]), Clock())
    source.start()
    (reading,) = source.read()
    assert reading.device.device_id == "n/host" and reading.temperature_celsius == 40.0
    assert reading.utilization_percent is None


@pytest.mark.parametrize(
    "steps",
    [[], [step(1, 1)], [step(0, 1), step(5, 1), step(3, 1)], [step(0, 101)], [{"at_seconds": 0, "devices": []}]],
)
def test_a_recording_that_makes_no_sense_is_refused_at_start(tmp_path: Path, steps: list[dict]) -> None:
    with pytest.raises(SourceUnavailableError, match="cannot replay"):
        ReplaySource("n", write(tmp_path, steps)).start()


def test_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailableError):
        ReplaySource("n", tmp_path / "nope.jsonl").start()


def test_replay_is_chosen_only_when_asked_for_and_needs_a_file(tmp_path: Path) -> None:
    def never():
        raise AssertionError("not this source")

    path = write(tmp_path, [step(0, 1)])
    selected = select_source(SourceMode.REPLAY, never, never, lambda: ReplaySource("n", path))
    assert selected.source.kind is SourceKind.REPLAY
    with pytest.raises(SourceUnavailableError, match="without a file"):
        select_source(SourceMode.REPLAY, never, never, None)


def test_the_shipped_drill_rises_through_every_pressure_level() -> None:
    drill = REPO_ROOT / "deploy" / "drills" / "pressure-rise.jsonl"
    ReplaySource("n", drill, Clock()).start()  # it replays
    devices = [json.loads(line)["devices"][0] for line in drill.read_text().splitlines()]
    used = [device["memory_used_bytes"] / device["memory_total_bytes"] for device in devices]
    assert used[0] < 0.5 < used[1] < 0.7 < used[2] < 0.85 < used[3] < 0.95 < used[4] and used[5] < 0.5


def test_a_rewritten_recording_plays_from_its_own_start_and_a_broken_one_is_ignored(tmp_path: Path) -> None:
    clock = Clock()
    path = write(tmp_path, [step(0, 10), step(5, 20)])
    source = ReplaySource("node", path, clock)
    source.start()
    clock.now += 100
    assert source.read()[0].memory_used_bytes == 20
    replacement = tmp_path / "next.jsonl"
    replacement.write_text(json.dumps(step(0, 95)) + "\n" + json.dumps(step(3, 40)) + "\n")
    replacement.replace(path)
    assert source.read()[0].memory_used_bytes == 95
    clock.now += 3
    assert source.read()[0].memory_used_bytes == 40
    path.write_text("not json\n")
    assert source.read()[0].memory_used_bytes == 40
