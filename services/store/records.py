"""What the store keeps, as plain values: no SQLAlchemy here, so callers and their tests need no database."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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


class JobState(StrEnum):
    """Where an asynchronous job is: queued, taken by a runner under a lease, or finished one way or another."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


# A job in one of these states never changes again: it is only read, and in time deleted.
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})


@dataclass(frozen=True)
class JobRecord:
    """One asynchronous job, or one line of a batch. request and result are JSON the caller builds and reads."""

    job_id: str
    owner: str  # the caller's subject, as "key:k1"
    priority: int  # 1 (LOW) to 4 (CRITICAL); the higher is claimed first
    request: str
    request_hash: str
    # The owner's identity as the edge encoded it at submission: the job runs as that, with its limits.
    identity: str
    created_at: float
    updated_at: float
    state: str = JobState.QUEUED
    batch_id: str | None = None
    custom_id: str | None = None  # the id the caller gave a batch line
    idempotency_key: str | None = None
    expires_at: float | None = None  # the end of the completion window: a job still queued then expires
    started_at: float | None = None  # when a runner last took it
    lease_owner: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    result: str | None = None
    error: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class BatchRecord:
    """A batch of jobs submitted together; its lines are jobs with its batch_id."""

    batch_id: str
    owner: str
    total: int
    request_hash: str
    created_at: float
    idempotency_key: str | None = None
    expires_at: float | None = None
    cancelled_at: float | None = None
    # OpenAI's Batch API only: the endpoint every line calls, the uploaded file, the caller's metadata (JSON).
    endpoint: str | None = None
    input_file_id: str | None = None
    metadata: str | None = None


@dataclass(frozen=True)
class FileRecord:
    """A file uploaded through OpenAI's Files API (a batch's input lines)."""

    file_id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
