"""What the store keeps, as plain values: no SQLAlchemy here, so callers and their tests need no database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyRecord:
    """An API key, as issued. The key string itself is never stored: only its SHA-256."""

    key_id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    max_priority: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    updated_at: float
    # After a rotation with a grace period, the old secret keeps working until previous_valid_until.
    previous_secret_hash: str | None = None
    previous_valid_until: float | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One request at the edge: who asked for what, and how it ended."""

    at: float
    subject: str
    surface: str
    route: str
    model: str
    priority: str
    outcome: str
    status: int
    reason: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    trace_id: str
