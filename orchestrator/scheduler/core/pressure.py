"""Memory-pressure levels, their admission policy, and thermal throttling, as pure functions of readings.

The defaults are DESIGN.md's. A level rises as soon as use crosses its boundary but falls only once use is
a margin below it (hysteresis), so a device hovering at a boundary does not flap between policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from services.shared.domain import Priority


class PressureLevel(IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4
    EMERGENCY = 5


class ModelsAdmitted(IntEnum):
    ALL = 1
    THOSE_THAT_FIT = 2
    SMALLEST_ONLY = 3
    NONE = 4


@dataclass(frozen=True)
class LevelPolicy:
    """What a level allows: which models, how many requests per engine, and which priorities may start."""

    models: ModelsAdmitted
    # The share of an engine's slots in use at most; at least one slot while any work is admitted.
    concurrency_share: float
    max_concurrency: int | None
    lowest_priority_started: Priority | None


DEFAULT_POLICIES = {
    PressureLevel.LOW: LevelPolicy(ModelsAdmitted.ALL, 1.0, None, Priority.LOW),
    PressureLevel.NORMAL: LevelPolicy(ModelsAdmitted.ALL, 0.75, None, Priority.LOW),
    PressureLevel.HIGH: LevelPolicy(ModelsAdmitted.THOSE_THAT_FIT, 1.0, 2, Priority.NORMAL),
    PressureLevel.CRITICAL: LevelPolicy(ModelsAdmitted.SMALLEST_ONLY, 1.0, 1, Priority.HIGH),
    PressureLevel.EMERGENCY: LevelPolicy(ModelsAdmitted.NONE, 0.0, 0, None),
}


@dataclass(frozen=True)
class PressureThresholds:
    """Used-memory fractions where NORMAL, HIGH, CRITICAL and EMERGENCY begin, and the hysteresis margin."""

    normal: float = 0.50
    high: float = 0.70
    critical: float = 0.85
    emergency: float = 0.95
    hysteresis: float = 0.03
    policies: dict[PressureLevel, LevelPolicy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))

    def __post_init__(self) -> None:
        bounds = (self.normal, self.high, self.critical, self.emergency)
        if not all(0.0 < low < high <= 1.0 for low, high in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"pressure boundaries must rise within (0, 1], got {bounds}")
        if not 0.0 <= self.hysteresis < self.normal:
            raise ValueError("the hysteresis margin must be below the first boundary")

    def start_of(self, level: PressureLevel) -> float:
        return {
            PressureLevel.LOW: 0.0,
            PressureLevel.NORMAL: self.normal,
            PressureLevel.HIGH: self.high,
            PressureLevel.CRITICAL: self.critical,
            PressureLevel.EMERGENCY: self.emergency,
        }[level]


def level_for(used_fraction: float, previous: PressureLevel, thresholds: PressureThresholds) -> PressureLevel:
    """The level for a reading, given the level before it: up at once, down only past the margin."""
    raw = max(level for level in PressureLevel if used_fraction >= thresholds.start_of(level))
    if raw >= previous:
        return raw
    # Falling: stay on each higher level until use is a margin below where that level starts.
    level = previous
    while level > raw and used_fraction < thresholds.start_of(level) - thresholds.hysteresis:
        level = PressureLevel(level - 1)
    return level


def concurrency_limit(policy: LevelPolicy, total_slots: int) -> int:
    """How many requests an engine may run at this level: the batch size, in sequences decoded together.

    Both engines batch their slots' sequences into every step, so the slots an engine may use at a level
    are the sequences it may batch there.
    """
    if policy.lowest_priority_started is None:
        return 0
    limit = max(1, int(total_slots * policy.concurrency_share))
    return min(limit, policy.max_concurrency) if policy.max_concurrency is not None else limit


def may_start(policy: LevelPolicy, priority: Priority) -> bool:
    return policy.lowest_priority_started is not None and priority >= policy.lowest_priority_started


class ThermalState(IntEnum):
    NORMAL = 1
    REDUCE = 2
    PAUSE = 3
    STOP = 4


@dataclass(frozen=True)
class ThermalThresholds:
    """Degrees Celsius where a device's load is reduced, new work paused, and admission stopped."""

    reduce: float = 65.0
    pause: float = 80.0
    stop: float = 85.0
    hysteresis: float = 3.0


def thermal_state(celsius: float | None, previous: ThermalState, thresholds: ThermalThresholds) -> ThermalState:
    """The throttle for a temperature, with the same up-at-once, down-past-a-margin rule as pressure."""
    if celsius is None:
        return ThermalState.NORMAL
    starts = {ThermalState.REDUCE: thresholds.reduce, ThermalState.PAUSE: thresholds.pause,
              ThermalState.STOP: thresholds.stop}  # fmt: skip
    raw = max([ThermalState.NORMAL, *(state for state, start in starts.items() if celsius >= start)])
    if raw >= previous:
        return raw
    state = previous
    while state > raw and celsius < starts[state] - thresholds.hysteresis:
        state = ThermalState(state - 1)
    return state
