"""The mesh's durable store: API keys and the audit log, in SQLite (the default) or PostgreSQL.

One schema (schema.py) for both, brought to head by versioned alembic migrations when the database opens.
"""

from services.store.database import Database, StoreUnavailable, Timeouts, normalize_url, open_database, sqlite_url
from services.store.records import AuditRecord, KeyRecord

__all__ = [
    "AuditRecord",
    "Database",
    "KeyRecord",
    "StoreUnavailable",
    "Timeouts",
    "normalize_url",
    "open_database",
    "sqlite_url",
]
