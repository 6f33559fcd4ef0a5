"""The store's entry point: open_database(url) migrates the database to head and returns its stores.

SQLite (a file, WAL) by default; PostgreSQL when the operator names one. The caller reads the URL from its
settings and passes it in.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from services.store.audit import AuditStore
from services.store.batches import BatchStore
from services.store.connections import Connections
from services.store.engine import Timeouts, build_engine
from services.store.errors import StoreUnavailable
from services.store.files import FileStore
from services.store.jobs import JobStore
from services.store.keys import KeyStore
from services.store.migrate import upgrade_to_head
from services.store.urls import mask_url, normalize_url, sqlite_url

__all__ = ["Database", "StoreUnavailable", "Timeouts", "normalize_url", "open_database", "sqlite_url"]


class Database:
    """An open database: its key, audit, job, batch and file stores, over one connection pool."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self.keys = KeyStore(connections)
        self.audit = AuditStore(connections)
        self.jobs = JobStore(connections)
        self.batches = BatchStore(connections)
        self.files = FileStore(connections)
        self.url = connections.masked_url

    async def ping(self) -> None:
        """Returns once the database answers; StoreUnavailable if it does not."""
        async with self._connections.transaction() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._connections.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.close()


async def open_database(url: str, *, timeouts: Timeouts | None = None) -> Database:
    """Opens the database at `url` (see normalize_url), bringing its schema to head first.

    StoreUnavailable if it cannot be reached; ValueError for a URL the store does not speak.
    """
    normalized = normalize_url(url)
    masked = mask_url(normalized)
    try:
        engine = build_engine(normalized, timeouts or Timeouts())
    except (OSError, sqlite3.Error) as error:
        # The SQLite file or its directory could not be made, or the file is locked or not a database.
        raise StoreUnavailable.wrapping(masked, error) from error
    connections = Connections(engine, masked)
    try:
        await upgrade_to_head(connections)
    except BaseException:
        await connections.dispose()
        raise
    return Database(connections)
