"""The one way the stores reach the database: a transaction that turns an unreachable database into
StoreUnavailable, and leaves every other error (a duplicate key, a bug) for the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.store.engine import SQLITE_WRITE_LOCK
from services.store.errors import StoreUnavailable, is_connect_failure, is_unreachable


class Connections:
    """The engine behind a Database, shared by its stores."""

    def __init__(self, engine: AsyncEngine, masked_url: str) -> None:
        self._engine = engine
        self.masked_url = masked_url

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @asynccontextmanager
    async def transaction(self, *, write_lock: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends. write_lock takes SQLite's write lock at once."""
        connection = await self._connect()
        try:
            if write_lock:
                await connection.execution_options(**{SQLITE_WRITE_LOCK: True})
            async with connection.begin():
                yield connection
        except Exception as error:
            if is_unreachable(error):
                raise StoreUnavailable.wrapping(self.masked_url, error) from error
            raise
        finally:
            await connection.close()

    async def dispose(self) -> None:
        await self._engine.dispose()

    async def _connect(self) -> AsyncConnection:
        try:
            return await self._engine.connect()
        except Exception as error:
            if is_connect_failure(error):
                raise StoreUnavailable.wrapping(self.masked_url, error) from error
            raise
