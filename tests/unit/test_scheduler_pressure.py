import pytest

from orchestrator.scheduler.core.pressure import (
    DEFAULT_POLICIES,
    ModelsAdmitted,
    PressureLevel,
    PressureThresholds,
    ThermalState,
    ThermalThresholds,
    concurrency_limit,
    level_for,
    may_start,
    thermal_state,
)
from services.shared.domain import Priority

LOW, NORMAL, HIGH, CRITICAL, EMERGENCY = (
    PressureLevel[name] for name in ("LOW", "NORMAL", "HIGH", "CRITICAL", "EMERGENCY")
)
T = PressureThresholds()


@pytest.mark.parametrize(
    ("used", "level"),
    [(0.0, LOW), (0.49, LOW), (0.50, NORMAL), (0.69, NORMAL), (0.70, HIGH), (0.849, HIGH), (0.85, CRITICAL),
     (0.949, CRITICAL), (0.95, EMERGENCY), (1.0, EMERGENCY)],
)  # fmt: skip
def test_rising_use_reaches_each_level_at_its_boundary(used: float, level: PressureLevel) -> None:
    assert level_for(used, LOW, T) is level


@pytest.mark.parametrize(
    ("previous", "used", "level"),
    [
        (NORMAL, 0.48, NORMAL),  # just below NORMAL's start: inside the margin, stays
        (NORMAL, 0.469, LOW),  # past the margin: falls
        (HIGH, 0.68, HIGH),
        (HIGH, 0.669, NORMAL),
        (CRITICAL, 0.83, CRITICAL),
        (CRITICAL, 0.819, HIGH),
        (EMERGENCY, 0.93, EMERGENCY),
        (EMERGENCY, 0.919, CRITICAL),
        (EMERGENCY, 0.10, LOW),  # a large fall crosses every level at once
        (CRITICAL, 0.60, NORMAL),
    ],
)
def test_falling_use_leaves_a_level_only_past_the_margin(previous, used, level) -> None:
    assert level_for(used, previous, T) is level


def test_a_reading_hovering_at_a_boundary_does_not_flap() -> None:
    level, seen = LOW, []
    for used in (0.71, 0.69, 0.705, 0.695, 0.70, 0.68):
        level = level_for(used, level, T)
        seen.append(level)
    assert seen == [HIGH] * 6


@pytest.mark.parametrize("bad", [dict(normal=0.7, high=0.5), dict(emergency=1.2), dict(hysteresis=0.6)])
def test_thresholds_must_make_sense(bad: dict) -> None:
    with pytest.raises(ValueError):
        PressureThresholds(**bad)


def test_each_level_limits_who_starts_and_how_many_run() -> None:
    policies = DEFAULT_POLICIES
    assert [may_start(policies[LOW], p) for p in Priority] == [True, True, True, True]
    assert [may_start(policies[HIGH], p) for p in Priority] == [False, True, True, True]
    assert [may_start(policies[CRITICAL], p) for p in Priority] == [False, False, True, True]
    assert [may_start(policies[EMERGENCY], p) for p in Priority] == [False, False, False, False]
    assert [concurrency_limit(policies[level], 8) for level in PressureLevel] == [8, 6, 2, 1, 0]
    assert concurrency_limit(policies[NORMAL], 1) == 1  # reduced, but never to nothing
    assert [policies[level].models for level in PressureLevel] == [
        ModelsAdmitted.ALL, ModelsAdmitted.ALL, ModelsAdmitted.THOSE_THAT_FIT, ModelsAdmitted.SMALLEST_ONLY,
        ModelsAdmitted.NONE,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("previous", "celsius", "state"),
    [
        (ThermalState.NORMAL, 64.9, ThermalState.NORMAL),
        (ThermalState.NORMAL, 65.0, ThermalState.REDUCE),
        (ThermalState.NORMAL, 80.0, ThermalState.PAUSE),
        (ThermalState.NORMAL, 85.0, ThermalState.STOP),
        (ThermalState.STOP, 83.0, ThermalState.STOP),
        (ThermalState.STOP, 81.9, ThermalState.PAUSE),
        (ThermalState.PAUSE, 77.5, ThermalState.PAUSE),
        (ThermalState.PAUSE, 76.9, ThermalState.REDUCE),
        (ThermalState.REDUCE, 61.9, ThermalState.NORMAL),
        (ThermalState.STOP, 40.0, ThermalState.NORMAL),
        (ThermalState.PAUSE, None, ThermalState.NORMAL),
    ],
)
def test_temperature_throttles_with_hysteresis(previous, celsius, state) -> None:
    assert thermal_state(celsius, previous, ThermalThresholds()) is state
