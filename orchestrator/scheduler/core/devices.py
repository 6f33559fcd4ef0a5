"""One device as the scheduler sees it: its ledger, its pressure level and thermal state, and what they allow.

The level follows the ledger (reservations and readings, the larger wins) with hysteresis. An engine that
runs out of memory forces EMERGENCY for a recovery period whatever the ledger says: the estimate was wrong,
so nothing new starts until the device has drained and had time to settle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.scheduler.core.ledger import MemoryLedger
from orchestrator.scheduler.core.pressure import (
    LevelPolicy,
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

DEFAULT_OOM_RECOVERY_SECONDS = 10.0


@dataclass(frozen=True)
class PressurePolicy:
    """Everything configurable about how pressure and heat limit admission."""

    thresholds: PressureThresholds = field(default_factory=PressureThresholds)
    thermal: ThermalThresholds = field(default_factory=ThermalThresholds)
    budget_bytes: int | None = None
    oom_recovery_seconds: float = DEFAULT_OOM_RECOVERY_SECONDS


class Device:
    def __init__(self, device_id: str, policy: PressurePolicy) -> None:
        self.device_id = device_id
        self.ledger = MemoryLedger(budget_bytes=policy.budget_bytes)
        self.level = PressureLevel.LOW
        self.thermal = ThermalState.NORMAL
        self.temperature_celsius: float | None = None
        self._policy = policy
        self._emergency_until: float | None = None
        # Its monitor has gone quiet: its readings are stale, so nothing new starts here until they resume.
        self.silent = False

    @property
    def policy(self) -> LevelPolicy:
        return self._policy.thresholds.policies[self.level]

    def observe(self, used_bytes: int, total_bytes: int, temperature_celsius: float | None, now: float) -> None:
        self.silent = False
        self.ledger.observe(used_bytes, total_bytes)
        self.temperature_celsius = temperature_celsius
        self.thermal = thermal_state(temperature_celsius, self.thermal, self._policy.thermal)
        self.reassess(now)

    def reassess(self, now: float) -> PressureLevel:
        """Recomputes the level after readings, reservations or time have moved."""
        level = level_for(self.ledger.used_fraction, self.level, self._policy.thresholds)
        if self._emergency_until is not None:
            if now < self._emergency_until:
                level = PressureLevel.EMERGENCY
            else:
                self._emergency_until = None
        self.level = level
        return level

    def out_of_memory(self, now: float) -> None:
        self._emergency_until = now + self._policy.oom_recovery_seconds
        self.level = PressureLevel.EMERGENCY

    @property
    def refuses_new_work(self) -> bool:
        """New asks are answered 429 at once: EMERGENCY, or too hot to admit anything."""
        return self.level is PressureLevel.EMERGENCY or self.thermal is ThermalState.STOP

    def may_start(self, priority: Priority) -> bool:
        return not self.silent and self.thermal < ThermalState.PAUSE and may_start(self.policy, priority)

    def concurrency_for(self, total_slots: int) -> int:
        limit = concurrency_limit(self.policy, total_slots)
        # A warm device runs at half its concurrency: fewer tokens a second, less heat.
        return max(1, limit // 2) if limit and self.thermal is ThermalState.REDUCE else limit


def device_for(node_name: str, device_id: str, known: list[str]) -> str | None:
    """Which of the devices seen so far (in the order first seen) an endpoint runs on, if any yet.

    A registered endpoint names its node, and its device within it, or none for the node's first one
    ("<node>/gpu0", or "<node>/host" on a node without GPUs). An endpoint given by flag names no node:
    its device matches by id, or by the part after the node, and no device means the first seen at all.
    """
    if node_name:
        names = [f"{node_name}/{device_id}"] if device_id else [f"{node_name}/gpu0", f"{node_name}/host"]
        return next((known_id for known_id in known if known_id in names), None)
    if device_id:
        return next((k for k in known if k == device_id or k.endswith(f"/{device_id}")), None)
    return known[0] if known else None
