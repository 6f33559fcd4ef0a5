"""The mesh's durable store: API keys, the audit log, asynchronous jobs with their batches and files, in SQLite
(the default) or PostgreSQL.

One schema (schema.py) for both, brought to head by versioned alembic migrations when the database opens.
"""

from services.store.database import Database, StoreUnavailable, Timeouts, normalize_url, open_database, sqlite_url
from services.store.errors import IdempotencyConflict
from services.store.records import (
    TERMINAL_STATES,
    AuditRecord,
    BatchRecord,
    FileRecord,
    JobRecord,
    JobState,
    KeyRecord,
)

__all__ = [
    "TERMINAL_STATES",
    "AuditRecord",
    "BatchRecord",
    "Database",
    "FileRecord",
    "IdempotencyConflict",
    "JobRecord",
    "JobState",
    "KeyRecord",
    "StoreUnavailable",
    "Timeouts",
    "normalize_url",
    "open_database",
    "sqlite_url",
]
