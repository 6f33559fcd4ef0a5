"""Which models to unload: those idle past their keep-alive, and those evicted to make room for another.

Pure choices; the scheduler marks the chosen endpoints as unloading and its shell carries the unloads out.
"""

from __future__ import annotations

from orchestrator.scheduler.core.endpoints import TrackedEndpoint


def idle_past_keep_alive(endpoints: list[TrackedEndpoint], now: float) -> list[TrackedEndpoint]:
    def expired(endpoint: TrackedEndpoint) -> bool:
        keep_alive = endpoint.spec.keep_alive_seconds
        return keep_alive is not None and now - endpoint.last_used >= keep_alive

    return [endpoint for endpoint in endpoints if endpoint.available and endpoint.idle and expired(endpoint)]


def eviction_victims(target: TrackedEndpoint, neighbours: list[TrackedEndpoint]) -> list[TrackedEndpoint]:
    """The least recently used idle models on the target's device whose unloading makes the target fit.

    Empty when the target fits already, when room is already being made, or when even unloading every idle
    model would not be enough (then the ask waits for running work to finish instead).
    """
    ledger = target.device.ledger
    if ledger.fits(target.cost_to_start) or any(endpoint.unloading for endpoint in neighbours):
        return []
    victims, freed = [], 0
    for endpoint in sorted((e for e in neighbours if e.idle), key=lambda e: e.last_used):
        victims.append(endpoint)
        freed += endpoint.footprint.weights_bytes
        if ledger.fits(target.cost_to_start - freed):
            return victims
    return []
