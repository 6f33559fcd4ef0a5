"""Whether an ask may start on an endpoint now, and which of several endpoints it should go to."""

from __future__ import annotations

from orchestrator.scheduler.core.endpoints import TrackedEndpoint
from orchestrator.scheduler.core.pressure import ModelsAdmitted
from services.shared.domain import Priority


def may_start_on(endpoint: TrackedEndpoint, priority: Priority, now: float, neighbours: list[TrackedEndpoint]) -> bool:
    """Every limit at once: a free slot, a closed circuit, the device's level and heat, and room in its ledger.

    `neighbours` are the endpoints sharing the device, against which "the smallest model" is judged.
    """
    device = endpoint.device
    if endpoint.free_slots <= 0 or endpoint.unloading or not endpoint.health.allows(now):
        return False
    if not device.may_start(priority):
        return False
    if len(endpoint.slots_in_use) >= device.concurrency_for(endpoint.spec.total_slots):
        return False
    admitted = device.policy.models
    if admitted is ModelsAdmitted.NONE:
        return False
    if admitted is ModelsAdmitted.SMALLEST_ONLY and endpoint.full_bytes > min(e.full_bytes for e in neighbours):
        return False
    return device.ledger.fits(endpoint.cost_to_start)


def best(candidates: list[TrackedEndpoint]) -> TrackedEndpoint | None:
    """The least loaded; among equals, the one answering fastest lately, then one already loaded."""

    def preference(endpoint: TrackedEndpoint) -> tuple[int, float, bool]:
        latency = endpoint.health.latency_ema_seconds
        return (-endpoint.free_slots, latency if latency is not None else 0.0, not endpoint.resident)

    return min(candidates, key=preference, default=None)
