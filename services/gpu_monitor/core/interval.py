"""The interval between two readings of a watch: validated, then held within what the monitor serves."""

from __future__ import annotations

import math

from services.shared.errors import invalid_argument

# Faster than this only burns CPU on the node; slower than this and the scheduler's view is stale.
MIN_INTERVAL_SECONDS = 0.05
MAX_INTERVAL_SECONDS = 60.0
# Longer than this is surely a mistake (a unit mix-up), so it is refused rather than quietly shortened.
LONGEST_ACCEPTED_SECONDS = 3600.0


def resolve_interval(requested_seconds: float | None, default_seconds: float) -> float:
    """The interval to serve: the request's (or the default when unset), clamped to the served range."""
    if requested_seconds is None:
        return clamp_interval(default_seconds)
    if math.isnan(requested_seconds) or not 0 <= requested_seconds <= LONGEST_ACCEPTED_SECONDS:
        raise invalid_argument(
            "INVALID_INTERVAL",
            f"interval must be between 0 and {LONGEST_ACCEPTED_SECONDS:g} seconds; "
            f"it is served clamped to {MIN_INTERVAL_SECONDS:g}..{MAX_INTERVAL_SECONDS:g} seconds",
            interval_seconds=requested_seconds,
        )
    return clamp_interval(requested_seconds)


def clamp_interval(seconds: float) -> float:
    return min(max(seconds, MIN_INTERVAL_SECONDS), MAX_INTERVAL_SECONDS)
